"""Stop a training run cleanly on Ctrl-C or ``kill``: finish the iteration, checkpoint it, then exit.

A signal that lands inside an iteration could leave parameters or optimizer state half-updated, so the first SIGINT
or SIGTERM only records a request; the training loop checks it between iterations, saves a checkpoint of the last
finished one (so ``metarl train --resume`` loses nothing) and raises :class:`StopRequested`. A second signal stops at
once (``KeyboardInterrupt``), as before.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(Exception):
    """Training stopped on a signal after checkpointing; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopOnSignal:
    """Context manager that turns the first SIGINT/SIGTERM into ``self.signum`` (checked by the loop).

    Outside the main thread (where handlers cannot be installed) it does nothing and signals keep their defaults.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name}: stopping after this iteration (send it again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def stop(self, run_dir: object, iteration: int) -> StopRequested:
        """The exception to raise once iteration ``iteration`` is checkpointed in ``run_dir``."""
        name = signal.Signals(self.signum or signal.SIGINT).name
        message = f"stopped by {name} after iteration {iteration} (checkpointed); continue with: "
        return StopRequested(message + f"metarl train --resume {run_dir}", self.signum or signal.SIGINT)
