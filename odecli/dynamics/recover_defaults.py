"""`odecli recover`'s option defaults and ranges, in a module that imports nothing, so that
`odecli --help` shows them without loading numpy (recover.py, which checks them, does)."""

DEGREES = (1, 5)           # the polynomial library's degree, inclusive range
DEFAULT_DEGREE = 2
DEFAULT_THRESHOLD = 0.2    # a share of the equation's RMS rate, in [0, 1)
