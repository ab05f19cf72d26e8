"""The one exception users see: a single line saying what is wrong and what to do."""


class MCUGenError(Exception):
    """A problem with the user's input or environment, reported as one line, exit 1."""


def display_name(name: str, limit: int = 60) -> str:
    """A node or tensor name made safe for a one-line message."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(name))
    return text if len(text) <= limit else text[: limit - 3] + "..."
