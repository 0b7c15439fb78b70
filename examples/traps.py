"""Hand-written backwards with the traps that torch.autograd.gradcheck checks, and a few it does
not: one planted case each, with the verdict a check must give (docs/api.md, "What each check
catches"). Every class is a target: `autograd-check run --target examples/traps.py:NAME`.

    GradOutputInPlace    backward doubles grad_output in place (g.mul_(2)): 2x wrong, and
                         manual, reused grad_output, agreed with it          grad-output-mutated
    IgnoresGradOutput    a loss whose backward never multiplies by grad_output: right at
                         grad_output = 1 only (not under loss scaling)       grad-output-ignored
    SharedHelper         backward and manual call one helper that forgets 1/N: manual against
                         autograd is the code against itself                 projection FAIL
    ManualWritesInput    manual runs z.sigmoid_() on its input (a NumPy habit)  input-mutated
    WideBiasGradient     backward returns the bias gradient unsummed: autograd sums it down
                         without a word                                      gradient-shape
    Float32Gradient      backward returns a float32 gradient for a float64 input   gradient-dtype
    ViewsGradOutput      backward calls grad_output.view(-1): breaks on a transposed one
                                                                  non-contiguous-grad-output
    NoisyBackward        backward adds noise: not the same gradient twice    nondeterministic
    TwoOutputs           two outputs, set_materialize_grads(False), backward uses both
                         gradients as tensors                              undefined-grad-output
    OneWrongElement      backward right except one element, 10% off, 256x256 float64
                                                                             projection FAIL
    StateOnClass         forward keeps x on the class, not on ctx: wrong once the op runs twice
                         before its backward (used twice in a model)          state-outside-ctx
    RMSNorm              correct, in any dtype: bfloat16 and float16 included  PASS

    python examples/traps.py              # the verdict of each, one line each; exits 0
                                          # when each verdict is the expected one
    python examples/traps.py --gradcheck  # beside torch.autograd.gradcheck's, slow and fast
"""

import sys

import torch
from torch.autograd.gradcheck import GradcheckError


def _randn(generator, dtype, device, *shape):
    return torch.randn(*shape, generator=generator, dtype=dtype, device=device)


class GradOutputInPlace(torch.autograd.Function):
    """x³, whose backward writes into grad_output: a 2x wrong gradient."""

    expected = "grad-output-mutated"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        g = grad_output.mul_(2)  # the trap
        return g * 3 * x**2

    @staticmethod
    def manual(x, grad_output):
        return grad_output * 3 * x**2

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, dtype, device, 4, 5),)


class IgnoresGradOutput(torch.autograd.Function):
    """Σ x², a loss whose backward returns 2x whatever grad_output is."""

    expected = "grad-output-ignored"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x**2).sum()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 2 * x  # the trap: grad_output * 2 * x

    @staticmethod
    def manual(x, grad_output):
        return grad_output * 2 * x

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, dtype, device, 4, 5),)


def _mean_square_grad(x):
    return 2 * x  # the trap: the mean's 1/N is forgotten, in the one helper both use


class SharedHelper(torch.autograd.Function):
    """mean(x²), whose backward and manual share a helper that forgets 1/N."""

    expected = "projection"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x**2).mean()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * _mean_square_grad(x)

    @staticmethod
    def manual(x, grad_output):
        return grad_output * _mean_square_grad(x)

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, dtype, device, 4, 5),)


class ManualWritesInput:
    """σ(z), with a manual that overwrites z (z.sigmoid_()): right numbers, the caller's z
    written (it is not: every call gets a copy), reported by name."""

    expected = "input-mutated"

    @staticmethod
    def fn(z):
        return torch.sigmoid(z)

    @staticmethod
    def manual(z, grad_output):
        s = z.sigmoid_()  # the trap
        return grad_output * s * (1 - s)

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, dtype, device, 4, 5),)


class WideBiasGradient(torch.autograd.Function):
    """x + b with b broadcast over rows; the bias gradient is returned per row, unsummed."""

    expected = "gradient-shape"

    @staticmethod
    def forward(ctx, x, b):
        return x + b

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, grad_output  # the trap: grad_output.sum(0, keepdim=True) for b

    @staticmethod
    def inputs(generator, dtype, device):
        return _randn(generator, dtype, device, 4, 5), _randn(generator, dtype, device, 1, 5)


class Float32Gradient(torch.autograd.Function):
    """2x, whose backward computes in float32 whatever the input's dtype."""

    expected = "gradient-dtype"

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad_output):
        return (2 * grad_output).float()  # the trap

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, torch.float64, device, 4, 5),)


class ViewsGradOutput(torch.autograd.Function):
    """x · w for a matrix x, whose backward flattens grad_output with .view."""

    expected = "non-contiguous-grad-output"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 3

    @staticmethod
    def backward(ctx, grad_output):
        flat = grad_output.view(-1)  # the trap: .reshape(-1)
        return (flat * 3).view(grad_output.shape)

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, dtype, device, 4, 5),)


class NoisyBackward(torch.autograd.Function):
    """x², whose backward adds a little noise (an atomic add's reordering, writ large)."""

    expected = "nondeterministic"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        noise = torch.rand_like(x) * 1e-12  # the trap
        return grad_output * 2 * x + noise

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, dtype, device, 4, 5),)


class TwoOutputs(torch.autograd.Function):
    """(sin x, cos x), unmaterialised gradients, a backward that forgets one may be None."""

    expected = "undefined-grad-output"

    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x)
        return torch.sin(x), torch.cos(x)

    @staticmethod
    def backward(ctx, grad_sin, grad_cos):
        (x,) = ctx.saved_tensors
        return grad_sin * torch.cos(x) - grad_cos * torch.sin(x)  # the trap: either is None

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, dtype, device, 4, 5),)


class OneWrongElement(torch.autograd.Function):
    """sin(x) on 256x256, whose backward is 10% off at one element."""

    expected = "projection"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        g = grad_output * torch.cos(x)
        g[17, 42] *= 1.1  # the trap
        return g

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, torch.float64, device, 256, 256),)


class StateOnClass(torch.autograd.Function):
    """x², whose forward keeps x on the class instead of ctx: right when each backward follows
    its own forward, wrong when the op is used twice before the backward runs."""

    expected = "state-outside-ctx"
    saved = None

    @staticmethod
    def forward(ctx, x):
        StateOnClass.saved = x.detach()  # the trap: ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * 2 * StateOnClass.saved

    @staticmethod
    def inputs(generator, dtype, device):
        return (_randn(generator, dtype, device, 4, 5),)


class RMSNorm:
    """x / rms(x) · w, with its backward by hand: correct, and passes in every dtype (in half
    precision the two gradients round differently, and are judged against float64)."""

    expected = "pass"

    @staticmethod
    def fn(x, w):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return x * r * w

    @staticmethod
    def manual(x, w, grad_output):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        gw = grad_output * w
        gx = r * gw - x * r.pow(3) * (gw * x).sum(-1, keepdim=True) / x.shape[-1]
        return gx, (grad_output * x * r).sum(0)

    @staticmethod
    def inputs(generator, dtype, device):
        return _randn(generator, dtype, device, 32, 32), _randn(generator, dtype, device, 32)


def batch_norm(x):
    """A BatchNorm without its affine part, over dimension 0."""
    mu, var = x.mean(0), x.var(0, unbiased=False)
    return (x - mu) / torch.sqrt(var + 1e-5)


def batch_norm_manual(x, grad_output, drop_mean=False):
    """batch_norm's dx by hand (correct); drop_mean plants a classic bug: the mean term of dx
    left out. A small difference of large terms: what half precision rounds differently."""
    n = x.shape[0]
    mu, var = x.mean(0), x.var(0, unbiased=False)
    inv = 1 / torch.sqrt(var + 1e-5)
    xh = (x - mu) * inv
    mean_term = 0 if drop_mean else grad_output.sum(0)
    return inv / n * (n * grad_output - mean_term - xh * (grad_output * xh).sum(0))


TRAPS = [GradOutputInPlace, IgnoresGradOutput, SharedHelper, ManualWritesInput,
         WideBiasGradient, Float32Gradient, ViewsGradOutput, NoisyBackward, TwoOutputs,
         OneWrongElement, StateOnClass, RMSNorm]


def verdict(trap, dtype=torch.float64, seed=0):
    """check() of one trap: (its CheckResult, what it was caught by: 'pass', a contract kind,
    or the reference whose rows failed)."""
    from autograd_check import check

    generator = torch.Generator().manual_seed(seed)
    inputs = [t.requires_grad_() for t in trap.inputs(generator, dtype, "cpu")]
    fn = trap.apply if isinstance(trap, type) and issubclass(trap, torch.autograd.Function) \
        else trap.fn
    result = check(fn, *inputs, manual=getattr(trap, "manual", None), seed=seed)
    broken = [c.kind for c in result.contract if not c.passed]
    failed = [c.name.rpartition(" vs ")[2] for c in result.comparisons
              if not c.passed and " vs " in c.name]
    return result, "pass" if result.passed else (broken or failed or ["manual vs autograd"])[0]


def gradcheck_verdict(trap, fast_mode):
    """torch.autograd.gradcheck on the same trap, in float64: 'caught: why', 'missed', or why it
    cannot say (it checks autograd's backward only, and builds an n x n Jacobian in slow mode)."""
    if not (isinstance(trap, type) and issubclass(trap, torch.autograd.Function)):
        return "n/a: no backward of its own"
    generator = torch.Generator().manual_seed(0)
    inputs = [t.detach().double().requires_grad_()
              for t in trap.inputs(generator, torch.float64, "cpu")]
    if not fast_mode and sum(t.numel() for t in inputs) > 4096:
        n = sum(t.numel() for t in inputs)
        return f"not run: a {n}x{n} Jacobian"
    try:
        torch.autograd.gradcheck(trap.apply, inputs, fast_mode=fast_mode)
    except GradcheckError as e:
        return "caught: " + _first_words(str(e))
    except Exception as e:  # the backward itself raised under gradcheck
        return f"the backward raised {type(e).__name__}"
    return "missed"


def _first_words(text):
    """gradcheck's reason, up to its first comma or 'for' (its messages go on for pages)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.split(",")[0].split(" for ")[0].removeprefix("backward ")


if __name__ == "__main__":
    ok = True
    compare = "--gradcheck" in sys.argv[1:]
    if compare:
        print(f"{'trap':18} {'autograd-check':27} {'gradcheck':37} gradcheck fast_mode")
    for trap in TRAPS:
        _, caught = verdict(trap)
        ok = ok and caught == trap.expected
        if compare:
            print(f"{trap.__name__:18} {caught:27} {gradcheck_verdict(trap, False):37} "
                  f"{gradcheck_verdict(trap, True)}")
        else:
            print(f"{trap.__name__:20} {caught:28} expected {trap.expected}")
    sys.exit(0 if ok else 1)
