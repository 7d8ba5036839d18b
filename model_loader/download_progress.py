"""Download progress: the value the page shows, and the thread-safe tracker that the hub clients feed."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

RATE_WINDOW_S = 10.0  # the rate (and so the ETA) follows the last seconds, not the whole run
EMIT_INTERVAL_S = 0.25  # at most 4 progress reports a second reach the caller


@dataclass(frozen=True)
class DownloadProgress:
    """How far a model download has come; `fraction`, `rate_bytes_per_s` and `eta_s` are None when unknown."""

    bytes_done: int
    bytes_total: int | None
    files_done: int
    files_total: int
    elapsed_s: float
    current_file: str | None = None
    recent_bytes: int = 0  # bytes that arrived over the last `recent_s` seconds
    recent_s: float = 0.0

    @property
    def fraction(self) -> float | None:
        if self.bytes_total is None:
            return None
        if self.bytes_total == 0:
            return 1.0 if self.files_done >= self.files_total else 0.0
        return min(1.0, self.bytes_done / self.bytes_total)

    @property
    def rate_bytes_per_s(self) -> float | None:
        if self.recent_s > 0:
            return self.recent_bytes / self.recent_s
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 and self.bytes_done else None

    @property
    def eta_s(self) -> float | None:
        rate = self.rate_bytes_per_s
        if self.bytes_total is None or not rate:
            return None
        return max(0, self.bytes_total - self.bytes_done) / rate


class DownloadAborted(BaseException):
    """Raised inside a hub client's worker thread to abandon a download.

    A BaseException, not an Exception: both clients retry a failed transfer on `except Exception`,
    which would swallow a cancellation.
    """


class ProgressTracker:
    """Sums per-file byte counts reported from many worker threads into throttled `DownloadProgress` reports.

    The report never moves backwards: when a client restarts a file from zero (a server that ignores
    Range) the bar holds until the new transfer catches up. The callback runs under the tracker's lock,
    so reports arrive in order; it must be quick.
    """

    def __init__(self, on_progress: Callable[[DownloadProgress], None] | None, cancel: threading.Event | None,
                 sizes: dict[str, int], clock: Callable[[], float] = time.monotonic) -> None:
        self._on_progress = on_progress
        self._cancel = cancel
        self._sizes = sizes
        self._total = sum(sizes.values())
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._per_file: dict[str | None, int] = {}
        self._done_files: set[str | None] = set()
        self._anonymous_done = 0  # files counted by a client that does not name them
        self._sum = 0
        self._shown = 0
        self._current: str | None = None
        self._last_emit = float("-inf")
        self._samples: deque[tuple[float, int]] = deque()

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise DownloadAborted

    def already_have(self, file: str) -> None:
        """Count a file found complete on disk before the download starts (clients skip it silently)."""
        with self._lock:
            self._set(file, self._sizes.get(file, 0))
            self._done_files.add(file)

    def start(self, file: str | None) -> None:
        """A client (re)starts `file`: its count restarts at zero."""
        self.check_cancel()
        with self._lock:
            self._set(file, 0)
            self._current = file

    def add(self, file: str | None, n: int) -> None:
        """`n` more bytes of `file` (negative when a client rewinds)."""
        self.check_cancel()
        with self._lock:
            self._set(file, self._per_file.get(file, 0) + n)
            if file is not None:
                self._current = file
            self._emit(final=False)

    def end(self, file: str | None) -> None:
        with self._lock:
            if file is None:
                self._anonymous_done += 1
            else:
                self._done_files.add(file)
            self._emit(final=False)

    def finish(self) -> None:
        """The client returned: everything is on disk, whatever the clients reported."""
        with self._lock:
            for file, size in self._sizes.items():
                self._set(file, size)
            self._per_file.pop(None, None)
            self._sum = self._total
            self._done_files.update(self._sizes)
            self._emit(final=True)

    def _set(self, file: str | None, value: int) -> None:
        size = self._sizes.get(file) if file is not None else None
        value = max(0, value if size is None else min(value, size))
        self._sum += value - self._per_file.get(file, 0)
        self._per_file[file] = value

    def _emit(self, final: bool) -> None:
        now = self._clock()
        self._shown = max(self._shown, min(self._sum, self._total))
        if self._on_progress is None or (not final and now - self._last_emit < EMIT_INTERVAL_S):
            return
        self._last_emit = now
        self._samples.append((now, self._shown))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        first_t, first_bytes = self._samples[0]
        # A client that does not name files counts every finished one, those found on disk included.
        files_done = max(len(self._done_files & self._sizes.keys()), self._anonymous_done)
        self._on_progress(DownloadProgress(
            bytes_done=self._shown, bytes_total=self._total, files_done=min(files_done, len(self._sizes)),
            files_total=len(self._sizes), elapsed_s=now - self._started, current_file=self._current,
            recent_bytes=self._shown - first_bytes, recent_s=now - first_t,
        ))
