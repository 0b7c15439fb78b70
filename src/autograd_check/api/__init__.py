"""The Python API: `check(fn, *inputs, ...)` and `assert_gradients(...)` for any function of any
tensors (a function, `MyFunction.apply`, an `nn.Module`).

    call.py        the arguments, checked and prepared: names, the tensors checked, evaluation
                   of fn at other values, the cotangent, and the caller's state kept as it was
    references.py  what autograd is compared with: projection, forward mode, finite differences,
                   and the double backward (order=2)
    check.py       check() and assert_gradients(): a CheckResult

Exported lazily from `autograd_check` (its __init__.py), so that `import autograd_check` loads
neither torch nor these modules.
"""
