"""The one error class of logitlens: a bad input or a model the lens cannot decode faithfully."""


class LogitLensError(ValueError):
    """Raised with a one-line message that says what was wrong and how to fix it."""
