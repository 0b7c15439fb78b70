"""What a gradient is compared with, and how user code is called: the arguments and isolation, the
backward's contract, the one forward/backward path (gradients), several outputs, and the
independent references (projection, forward mode, finite differences, order 2)."""
