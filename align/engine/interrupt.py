"""Graceful stops: cluster pre-emption (SIGTERM) and Ctrl-C (SIGINT) lose no work.

The first signal only sets a flag: the loop finishes the optimizer step it is in, all ranks agree
on stopping at that step (the flag rides on the per-step all-reduce), a checkpoint is written and
the run exits with `EXIT_INTERRUPTED` after printing the exact resume command. A second signal
exits at once (`EXIT_ABORTED`) without touching the last good checkpoint: checkpoints are
published by an atomic rename, so an abandoned one is only a `.tmp-` directory.

Under `accelerate launch`, the launcher forwards the signal to every worker (workers run in
their own sessions, so a terminal's Ctrl-C reaches them once) and kills them 30 s later: a step
plus a checkpoint must fit in that window.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped cleanly, resume to continue (schedulers may requeue)
EXIT_ABORTED = 130  # a second signal: stopped at once


class StopRequest:
    """Context manager installing SIGINT/SIGTERM handlers for the training loop (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only async-signal-safe work here: os.write, not logging (its locks may be held).
        name = signal.Signals(signum).name
        if self.signum is not None:
            os.write(
                2, f"\nalign: second {name}: stopping now; the last good checkpoint is untouched\n".encode()
            )
            os._exit(EXIT_ABORTED)
        self.signum = signum
        os.write(
            2,
            f"\nalign: {name} received: finishing this step, then writing a checkpoint "
            "(send it again to stop at once)\n".encode(),
        )
