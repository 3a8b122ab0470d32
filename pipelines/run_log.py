"""The run's log in the Prefect UI: Python warnings raised while a run trains (quality gate, a
tracking store that went away, skipped files, ...) and a result row's notes, not only in the worker's
terminal."""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Iterator
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

# The hook is global; the run it logs to is the calling thread's (Prefect's run context), so
# parallel runs keep their own.
_LOGGED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("fcdd_logged", default=None)
_terminal_showwarning = warnings.showwarning  # what showed warnings before the hook: still called


def _show_in_run_log(message, category, filename, lineno, file=None, line=None) -> None:
    _terminal_showwarning(message, category, filename, lineno, file, line)  # as before
    logged = _LOGGED.get()
    if logged is None:
        return
    try:
        logger = get_run_logger()
    except MissingContextError:  # no run in this thread: the terminal only
        return
    logged.append(str(message))
    logger.warning("%s", message)


@contextlib.contextmanager
def warnings_in_run_log() -> Iterator[list[str]]:
    """Within: warnings go to the current run's log too; yields the messages logged."""
    global _terminal_showwarning
    if warnings.showwarning is not _show_in_run_log:
        _terminal_showwarning, warnings.showwarning = warnings.showwarning, _show_in_run_log
    token = _LOGGED.set([])
    try:
        yield _LOGGED.get()
    finally:
        _LOGGED.reset(token)


def log_notes(logger, row: dict[str, Any], logged: list[str]) -> None:
    """A row's warnings (data, scores, registry) in the run's log, those not logged as warnings."""
    for note in ("warning", "score_warning", "registry_note"):
        if row.get(note) and not any(row[note] in text for text in logged):
            logged.append(row[note])
            logger.warning("%s", row[note])
