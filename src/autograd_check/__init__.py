"""autograd-check: verify PyTorch autograd against hand-derived gradients."""

__version__ = "0.1.0"
