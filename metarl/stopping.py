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
from collections.abc import Callable
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

    def end_of_iteration(
        self, done: int, total: int, every: int, save: Callable[[int], object], run_dir: object
    ) -> None:
        """Checkpoint (``save(done)``) on the schedule (every ``every`` iterations and at the last) or when a stop was
        requested; then, on a request before the last iteration, raise :class:`StopRequested`."""
        if done % every == 0 or done == total or self.requested:
            save(done)
        if self.signum is not None and done < total:
            name = signal.Signals(self.signum).name
            message = f"stopped by {name} after iteration {done} (checkpointed); continue with: "
            raise StopRequested(message + f"metarl train --resume {run_dir}", self.signum)
