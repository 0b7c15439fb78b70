"""The Python API: `check(fn, *inputs, ...)` and `assert_gradients(...)` for any function of any
tensors (a function, `MyFunction.apply`, an `nn.Module`), returning a CheckResult.

Exported lazily from `autograd_check` (its __init__.py), so that `import autograd_check` loads
neither torch nor these modules. What check() compares with lives a floor below, in references/.
"""
