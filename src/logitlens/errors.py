"""The one error class of logitlens: a bad input or a model the lens cannot decode faithfully."""


class LogitLensError(ValueError):
    """Raised with a one-line message that says what was wrong and how to fix it.

    Every bad input raises it before any long work; the command line prints it and exits with status 2.
    It is a ``ValueError``.

    Example:
        >>> try:
        ...     lens.run("")
        ... except logitlens.LogitLensError as exc:
        ...     print(exc)   # one line: what was wrong and how to fix it
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name if it has none), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
