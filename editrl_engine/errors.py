"""User errors: a mistake in what the user gave (an argument, a config value, a file or folder), not a bug.

The `editrl` command prints a UserError as one line, `editrl: error: MESSAGE`, and exits with status 2; any
other exception is a bug of ours and propagates with its traceback (exit status 1). So raise a UserError only
for input the user can fix, with a message naming the problem and the fix.

    UserError          the base (the CLI's CommandError and the run config's ConfigError derive from it)
    InputError         also a ValueError: an argument, value or data file that cannot be used
    MissingPathError   also a FileNotFoundError: a file or folder the user named does not exist or is incomplete
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message names it and the fix."""


class InputError(UserError, ValueError):
    """An argument, value or data file that cannot be used."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist, or lacks what it should hold."""
