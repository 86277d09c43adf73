"""`python -m pipeline.cli`: the `lockstep` command."""

from pipeline.cli import main

main()
