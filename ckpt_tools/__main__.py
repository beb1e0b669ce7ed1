"""`python -m ckpt_tools` runs the `ckpt` command line."""

from ckpt_tools.cli import main

main()
