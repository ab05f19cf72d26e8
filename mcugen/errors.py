"""The one exception users see: a single line saying what is wrong and what to do."""


class MCUGenError(Exception):
    """A problem with the user's input or environment, reported as one line, exit 1."""
