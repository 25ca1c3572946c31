"""Rate-limited logging of request errors: one line per kind per interval, with a count.

A hostile or broken client can send thousands of bad requests a second; each must get its
status, but the log must stay readable. ``ErrorLog.record`` logs the first error of a kind
at once and then at most one line per ``interval_s`` with the number seen since the last
line; a traceback is logged only for the first unexpected exception of each kind.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("argonic.server")


@dataclass
class _Kind:
    last_logged: float
    suppressed: int = 0
    last_message: str = ""


class ErrorLog:
    """Counts errors by kind and logs each kind at most once per ``interval_s``."""

    def __init__(self, interval_s: float = 60.0, level: int = logging.WARNING) -> None:
        self.interval_s = interval_s
        self.level = level
        self.counts: dict[str, int] = {}
        self._kinds: dict[str, _Kind] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, message: str, exc: BaseException | None = None) -> None:
        """Count one error of ``kind``; log it unless this kind was logged < interval ago."""
        now = time.monotonic()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            state = self._kinds.get(kind)
            if state is None:
                self._kinds[kind] = _Kind(now)
                first = True
            elif now - state.last_logged < self.interval_s:
                state.suppressed += 1
                state.last_message = message
                return
            else:
                first = False
                suppressed, state.suppressed, state.last_logged = state.suppressed, 0, now
        short = message if len(message) <= 300 else message[:297] + "..."
        if first:
            # a traceback only for the first unexpected exception of a kind
            log.log(self.level, "%s: %s", kind, short, exc_info=exc)
        else:
            log.log(self.level, "%s: %s (%d more since the last report)", kind, short, suppressed)

    def flush(self) -> None:
        """Log the counts not yet reported (at shutdown)."""
        with self._lock:
            pending = [(k, s.suppressed, s.last_message) for k, s in self._kinds.items()]
            for state in self._kinds.values():
                state.suppressed, state.last_logged = 0, time.monotonic()
        for kind, count, message in pending:
            if count:
                log.log(self.level, "%s: %d more, last: %s", kind, count, message[:300])
