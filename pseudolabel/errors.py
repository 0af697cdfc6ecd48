"""Exceptions that describe a user's mistake.

Library functions raise :class:`InputError` (a :class:`ValueError`) with a message that names the
offending file or argument and says how to fix it. The command line turns it into a one-line
``Error: ...`` message and a non-zero exit code, without a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """A problem with the user's input (a file, a folder or a parameter), with the fix in the message."""
