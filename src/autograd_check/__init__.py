"""autograd-check: verify PyTorch autograd against hand-derived gradients."""

from autograd_check._version import __version__

__all__ = ["__version__"]
