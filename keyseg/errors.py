"""The two kinds of failure a command reports, and the exit code each one gets.

Every stage raises one of these (or lets an `OSError` through); `cli.py` turns it into
one line on stderr and an exit code, never a traceback:

- `UsageError`: the command line or a config file asks for something impossible
  (an unknown split, a negative batch size). Exit 2.
- `DataError`: an input file or the environment is wrong (a file that is not JSON, a
  shard that is truncated, a folder that cannot be written). Exit 1. The message starts
  with the file it is about.

Both subclass `ValueError`, so code that catches per-record `ValueError`s keeps working.
"""

from __future__ import annotations

import os


class UsageError(ValueError):
    """Bad arguments or configuration: exit 2."""


class DataError(ValueError):
    """A bad input file or environment: exit 1. Build it as DataError(path, reason)."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


def describe_os_error(error: OSError) -> str:
    """`path: reason` for an OSError (permission denied, disk full, read-only folder...)."""
    if error.strerror is None and error.filename is None:
        return str(error) or type(error).__name__  # raised with a message of our own
    reason = error.strerror or str(error)
    if error.filename is not None and error.filename2 is not None:
        return f"{error.filename} -> {error.filename2}: {reason}"
    if error.filename is not None:
        return f"{error.filename}: {reason}"
    return reason
