"""`python -m mnistbench`: the command line, as the `mnistbench` script runs it."""

from mnistbench.cli import main

main(prog_name="mnistbench")
