"""Tracking calls off the caller's thread, for a training loop that must never wait on a store.

MLflow retries a request to a stopped server for minutes before it raises; a training loop that
logged in line stood still that long, then died. :class:`Uploader` runs the calls in order on one
daemon thread: the loop waits for them at most ``timeout`` seconds while the store answers, and
not at all once it stopped answering. A failure warns once; the failed call is retried at the next
:meth:`Uploader.submit` and at :meth:`Uploader.close` (also run when the process exits), and
nothing after it is attempted out of order.
"""

from __future__ import annotations

import atexit
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable


class Uploader:
    """Runs ``submit``-ted calls in order on a background thread.

    Args:
        target: what the calls log to, for messages (``"MLflow run 0123..."``).
        later: how to log by hand what was not logged in the end.
        timeout: the most seconds :meth:`settle` waits for the calls while the store answers.
    """

    def __init__(self, target: str, *, later: str, timeout: float = 5.0) -> None:
        self.target, self.later, self.timeout = target, later, timeout
        self._jobs: deque[tuple[str, Callable[[], object]]] = deque()
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self._retry = False
        self._busy_since: float | None = None
        self._warned = False
        self._closed = False
        self._close_called = False
        self._thread = threading.Thread(target=self._run, name="vogflow-tracking", daemon=True)
        self._thread.start()
        # At exit, a daemon thread would die with calls still queued: give them a last chance.
        ref = weakref.ref(self)
        atexit.register(lambda: (u := ref()) is not None and u._at_exit())

    @property
    def pending(self) -> list[str]:
        with self._cv:
            return [what for what, _ in self._jobs]

    def submit(self, what: str, call: Callable[[], object]) -> None:
        """Queue ``call`` (described as ``what``) and retry a call that failed before."""
        with self._cv:
            self._jobs.append((what, call))
            self._retry = True
            self._cv.notify_all()

    def _stuck(self) -> bool:
        busy = self._busy_since is not None and time.monotonic() - self._busy_since > self.timeout
        return self._error is not None or busy

    def settle(self) -> None:
        """Wait up to ``timeout`` for the queue while the store answers; return at once if it
        failed or stalled already (the calls go on in the background)."""
        with self._cv:
            if self._stuck():
                return
            done = self._cv.wait_for(
                lambda: not self._jobs or self._error is not None, timeout=self.timeout
            )
            stalled = not done and self._error is None
        if stalled:
            self._warn(f"it has not answered for {self.timeout:g} s")

    def close(self, timeout: float | None = 60.0) -> bool:
        """Retry what failed and wait up to ``timeout`` seconds for every call; True when all
        were logged. What was not is named in a warning, with how to log it by hand."""
        with self._cv:
            self._close_called = True
            if self._closed:
                return not self._jobs
            self._retry = True
            self._cv.notify_all()
            deadline = None if timeout is None else time.monotonic() + timeout

            def finished() -> bool:
                return not self._jobs or (self._error is not None and not self._retry)

            while not finished():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cv.wait(left)
            left_over = [what for what, _ in self._jobs]
            self._closed = not left_over
        if left_over:
            why = f" ({_one_line(self._error)})" if self._error is not None else ""
            warnings.warn(
                f"vogflow: {len(left_over)} call(s) to {self.target} were not logged{why}: "
                f"{', '.join(left_over[:5])}{' ...' if len(left_over) > 5 else ''}; the files "
                f"are saved: {self.later}",
                RuntimeWarning,
                stacklevel=2,
            )
        return not left_over

    def _at_exit(self) -> None:
        if not self._close_called:  # an explicit close already warned of what it left
            self.close(timeout=10.0)

    def _warn(self, why: str) -> None:
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            f"vogflow: logging to {self.target} failed or stalled ({why}); training goes on and "
            "every checkpoint file is saved; the logging is retried at the next epoch and at "
            "the end",
            RuntimeWarning,
            stacklevel=3,
        )

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._jobs and (self._error is None or self._retry))
                self._retry = False
                self._error = None
                _, call = self._jobs[0]
                self._busy_since = time.monotonic()
            try:
                call()
                error = None
            except Exception as err:  # noqa: BLE001 - any failure of the store is retried
                error = err
            with self._cv:
                self._busy_since = None
                self._error = error
                if error is None:
                    self._jobs.popleft()
                self._cv.notify_all()
            if error is not None:
                self._warn(_one_line(error))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
