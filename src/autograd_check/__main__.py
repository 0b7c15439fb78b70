"""`python -m autograd_check`: the same as the autograd-check console script."""

from autograd_check.cli import main

if __name__ == "__main__":  # not when multiprocessing's fork server imports it as __mp_main__
    main()
