"""`python -m meshchain` runs the command line."""

from meshchain.cli.main import main

main()
