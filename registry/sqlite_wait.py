"""Waiting for another SQLite connection's write lock in short steps.

SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 … ms between attempts, however soon the
lock is free: a writer meeting a transaction held for about a millisecond waited 20–40 ms. The
registry's connections (`registry.db`) and the audit spool's write connection (`atna.spool`) have
no busy handler of SQLite's; the statement that takes the write lock is retried here instead.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Callable, TypeVar

T = TypeVar("T")

FIRST_PAUSE_S = 0.0002
LAST_PAUSE_S = 0.002


def retry_while_locked(attempt: Callable[[], T], timeout: float, *,
                       after_failure: Callable[[], None] | None = None) -> T:
    """`attempt()`, again after 0.2, 0.4 … 2 ms while it fails with SQLite's "database is locked"
    (or busy), up to `timeout` seconds in all, then that error. `after_failure` runs after each
    such failure (e.g. to roll back the empty transaction the attempt opened)."""
    deadline = None
    pause = FIRST_PAUSE_S
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if after_failure is not None:
                after_failure()
            now = time.monotonic()
            deadline = deadline or now + timeout
            if now > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LAST_PAUSE_S)
