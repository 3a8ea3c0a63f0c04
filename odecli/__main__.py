"""`python -m odecli` is the same as the `odecli` console script."""

from odecli.cli import main

if __name__ == "__main__":
    main()
