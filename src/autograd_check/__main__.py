"""`python -m autograd_check`: the same as the autograd-check console script."""

from autograd_check.cli import main

main()
