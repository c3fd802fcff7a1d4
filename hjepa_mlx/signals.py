"""Ctrl-C / SIGTERM during training: a flag the loop reads at the next step boundary (it then saves a
checkpoint and exits 130), instead of an exception that could land in the middle of a checkpoint write."""

from __future__ import annotations

import signal


class StopRequested:
    """A context manager; `.signal` is None, or the name of the first signal received."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests): no handler
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
