"""The one base class for errors caused by a user's input (files, fields, options).

Every layer derives its input errors from :class:`InputError`; the CLI prints them as
one clear line and exits 2 without a traceback. Anything else is a bug and keeps its
traceback.
"""


class InputError(ValueError):
    """Bad input: the message says what was wrong, where, and what to do."""
