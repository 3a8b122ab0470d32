"""One error hierarchy for the package: every error a user can cause or mend is an ``FCDDError``.

Its message is one line naming the file, key or value and what is wrong; the CLI catches the base
class once and prints that line (exit 2). Orchestration (pipelines/) reads the type to decide
retries: an ``FCDDError`` cannot heal by running again, a crash or a lost worker can.
"""

from __future__ import annotations


class FCDDError(Exception):
    """A user-facing error: bad configuration, data, model file, export or training state."""


class ConfigError(FCDDError, ValueError):
    """A configuration key or value is wrong; the message names it."""


class DataError(FCDDError, ValueError):
    """Bad input data: the message names the file or value and what is wrong."""


class TrainingError(FCDDError, RuntimeError):
    """Training cannot go on (a non-finite loss, an unusable checkpoint, a busy run folder)."""


class ModelError(FCDDError, ValueError):
    """A model file or weights file is missing, unreadable or not what it claims to be."""


class ExportError(FCDDError, ValueError):
    """An export cannot be written or an exported folder is not usable."""


class StorageError(FCDDError, OSError):
    """A file cannot be written: no space left on the device, no permission, a read-only place."""


class UsageError(FCDDError):
    """A command-line argument is wrong (an option's value, a missing input)."""


def shown(value: object, limit: int = 120) -> str:
    """A value as messages show it: a bounded repr (nested and long values abbreviated), so an error
    about a huge or deeply aliased value (a YAML alias bomb) costs microseconds and one short line."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_path(path: object) -> str:
    """A file name as text that can always be printed and written to a UTF-8 file (CSV, JSON): the
    bytes of a name that are not UTF-8 (Linux allows any) appear as \\xNN escapes."""
    import os

    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")
