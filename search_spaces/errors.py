"""The one base class for errors caused by a user's input (files, fields, options).

Every layer derives its input errors from :class:`InputError`; the CLI prints them as
one clear line and exits 2 without a traceback. Anything else is a bug and keeps its
traceback.
"""


class InputError(ValueError):
    """Bad input: the message says what was wrong, where, and what to do."""


def is_number(value, kinds: type | tuple = (int, float)) -> bool:
    """Whether an input value is a number of ``kinds``. A bool is not, although Python
    counts it as an int: YAML's ``true`` must not pass for 1."""
    return isinstance(value, kinds) and not isinstance(value, bool)
