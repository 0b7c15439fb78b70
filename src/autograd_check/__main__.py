from autograd_check.cli import main

main()
