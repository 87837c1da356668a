"""The one exception type users see: a single line saying what was wrong and how to fix it."""


class CrossneuronError(ValueError):
    """Bad input or state. The message is one line: what was wrong, what was expected, the fix."""
