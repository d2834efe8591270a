"""Shared task-stream helpers: split-aware task generators, task-dict validation and the ``TaskFamily`` mixin.

Every family draws its tasks from ``task_generator(rng, split)``: an integer drawn from ``rng`` (or ``rng``
itself when it is an int) is the entropy of a ``numpy.random.SeedSequence`` whose spawn key is the split's
index, so the train and test streams of one seed are independent and reproducible, and never share a draw.
"""

from __future__ import annotations

import copy
import math
import numbers
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test")

Task = dict[str, Any]


def task_generator(rng: np.random.Generator | int, split: str = "train") -> np.random.Generator:
    """Return the generator of ``split``'s task stream for ``rng`` (a seed, or a Generator: advanced once)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(rng, np.random.Generator):
        entropy = int(rng.integers(0, 2**63))
    elif isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        entropy = int(rng)
        if entropy < 0:
            raise ValueError(f"task seed must be a non-negative int, got {entropy}")
    else:
        raise TypeError(f"rng must be a numpy Generator or a non-negative int, got {type(rng).__name__}")
    return np.random.default_rng(np.random.SeedSequence(entropy=entropy, spawn_key=(SPLITS.index(split),)))


def check_count(n: int) -> int:
    """Validate a number of tasks."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"number of tasks must be a non-negative int, got {n!r}")
    return int(n)


def check_horizon(horizon: int) -> int:
    """Validate an episode horizon (a positive int)."""
    if not isinstance(horizon, numbers.Integral) or isinstance(horizon, bool) or horizon < 1:
        raise ValueError(f"horizon must be a positive int, got {horizon!r}")
    return int(horizon)


def check_task_keys(task: Any, keys: tuple[str, ...], family: str) -> None:
    """Raise ValueError unless ``task`` is a mapping with exactly ``keys``."""
    if not isinstance(task, Mapping):
        raise ValueError(f"{family} task must be a dict with keys {list(keys)}, got {type(task).__name__}")
    missing = [k for k in keys if k not in task]
    extra = [k for k in task if k not in keys]
    if missing or extra:
        raise ValueError(f"{family} task must have keys {list(keys)}; missing {missing}, unexpected {extra}")


def task_float(value: Any, name: str, family: str) -> float:
    """Return ``value`` as a finite float, or raise ValueError naming the task key."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{family} task[{name!r}] must be a finite number, got {value!r}")
    return float(value)


def task_sign(value: Any, name: str, family: str) -> int:
    """Return ``value`` as the int +1 or -1, or raise ValueError naming the task key."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value not in (1, -1):
        raise ValueError(f"{family} task[{name!r}] must be +1 or -1, got {value!r}")
    return int(value)


def task_array(value: Any, shape: tuple[int, ...], name: str, family: str) -> np.ndarray:
    """Return ``value`` as a finite float64 array of ``shape``, or raise ValueError naming the task key."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{family} task[{name!r}] must be numbers of shape {shape}: {exc}") from None
    if array.shape != shape:
        raise ValueError(f"{family} task[{name!r}] must have shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{family} task[{name!r}] must be finite")
    return array


class hybridmethod:  # noqa: N801 (used like classmethod)
    """Bind a method to the instance when called on one, else to the class (like ``classmethod``)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.__func__ = func
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def __get__(self, obj: Any, objtype: type | None = None) -> Callable[..., Any]:
        return types.MethodType(self.__func__, objtype if obj is None else obj)


class TaskFamily:
    """Mixin for a task-distribution env: ``sample_tasks`` (class or instance), ``set_task``/``get_task``.

    Subclasses define ``TASK_KEYS``, ``TASK_PARAMETERS``, ``PAPER``, a ``_draw_tasks(owner, n, generator)``
    hybridmethod and ``_apply_task(task) -> Task`` (validates, stores the task's arrays, returns the
    normalized dict). ``reset(options={"task": task})`` sets the task before the episode starts.
    """

    TASK_KEYS: ClassVar[tuple[str, ...]] = ()
    TASK_PARAMETERS: ClassVar[str] = ""
    PAPER: ClassVar[str] = ""
    horizon: int
    _task: Task
    _t: int

    @hybridmethod
    def sample_tasks(owner, n: int, rng: np.random.Generator | int, split: str = "train") -> list[Task]:  # noqa: N805
        """Return ``n`` plain, JSON-serializable task dicts from ``split``'s stream ("train" or "test")."""
        count = check_count(n)
        return owner._draw_tasks(count, task_generator(rng, split))

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Validate and set the task (ValueError on a bad dict); it applies from the next step on."""
        check_task_keys(task, self.TASK_KEYS, type(self).__name__)
        self._task = self._apply_task(task)

    def get_task(self) -> Task:
        """Return a copy of the current task dict."""
        return copy.deepcopy(self._task)

    def _apply_task(self, task: Mapping[str, Any]) -> Task:
        raise NotImplementedError

    def _set_default_task(self, task: Mapping[str, Any] | None) -> None:
        """Set ``task``, or the family's default: the first training task of seed 0."""
        self.set_task(task if task is not None else self.sample_tasks(1, 0, "train")[0])

    def _begin_episode(self, options: Mapping[str, Any] | None) -> None:
        """Apply ``options["task"]`` (the only option) and restart the step counter."""
        if options:
            unknown = [k for k in options if k != "task"]
            if unknown:
                raise ValueError(f"{type(self).__name__}.reset accepts only options['task'], got {unknown}")
            self.set_task(options["task"])
        self._t = 0
