"""Meta-World ML1 and ML10 (Yu et al. 2019; Farama ``metaworld`` 3.x) as task distributions of the suite.

Meta-World is an optional extra (``pip install -e ".[metaworld]"``, which also pins ``mujoco==3.3.0``, the version it
needs). Importing this module without it raises :class:`MetaWorldMissing` (an ``ImportError``) with the install line.

A benchmark (``metaworld.ML1(env_name, seed)`` or ``metaworld.ML10(seed)``) fixes 50 goals per environment class for
each split; ``benchmark_seed`` (default 0) makes those goals the same in every process (Meta-World draws them at
random when no seed is given). A task of the suite names one of them: ``{"env_name": "reach-v3", "split": "test",
"index": 17}``, the 17th goal of the test split, so task dicts stay plain JSON and a held-out task can never be a
training one: ``sample_tasks(n, rng, split)`` only draws from ``split``'s list.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from metarl_envs.tasks import SPLITS, Task, TaskFamily, check_count, check_horizon, task_generator


class MetaWorldMissing(ImportError):
    """Meta-World is not installed."""


try:
    import metaworld
except ImportError as exc:  # pragma: no cover - exercised by the no-extra install (tests/test_meta_world.py)
    raise MetaWorldMissing(
        f'Meta-World is not installed ({exc}); install the extra with: pip install -e ".[metaworld]"'
    ) from None

MAX_PATH_LENGTH = 500  # Meta-World's episode length (SawyerXYZEnv.max_path_length)


@functools.lru_cache(maxsize=8)
def _benchmark(name: str, env_name: str | None, seed: int) -> Any:
    """The Meta-World benchmark object (building ML10 takes seconds: once per process and setting)."""
    if name == "ML1":
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise ValueError(f"env_name must be a Meta-World v3 environment such as 'reach-v3', got {env_name!r}")
        return metaworld.ML1(env_name, seed=seed)
    return metaworld.ML10(seed=seed)


class _MetaWorldTasks(TaskFamily, gym.Env[np.ndarray, np.ndarray]):
    """The goals of one Meta-World benchmark as a task family; steps the benchmark's own environment classes.

    - Observation: Meta-World's 39 numbers (hand, gripper, objects, previous frame; the goal slots are zero in the ML
      benchmarks, so the agent must find the goal from rewards). Action: 4 numbers in [-1, 1] (hand motion, gripper).
    - Reward: Meta-World's v2 reward (in [0, 10] per step). ``info["success"]`` is Meta-World's success flag of the
      step; an episode succeeds when it is set at any step (Meta-World's own rule), which the sampler records.
    - Never terminates (Meta-World does not, in training or evaluation here); truncates at ``horizon`` steps
      (default and maximum 500, Meta-World's). Resets are deterministic given the task (Meta-World fixes the object
      and goal positions per task), so ``reset(seed=...)`` only seeds ``np_random``.
    """

    metadata = {"render_modes": []}
    TASK_KEYS = ("env_name", "split", "index")
    PAPER = "Yu et al. 2019, Meta-World (arXiv:1910.10897); Farama metaworld 3.x"
    BENCHMARK = ""
    reports_success = True

    def __init__(
        self,
        env_name: str | None = None,
        benchmark_seed: int = 0,
        horizon: int = MAX_PATH_LENGTH,
        task: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(benchmark_seed, int) or isinstance(benchmark_seed, bool) or benchmark_seed < 0:
            raise ValueError(f"benchmark_seed must be a non-negative int, got {benchmark_seed!r}")
        self.horizon = check_horizon(horizon)
        if self.horizon > MAX_PATH_LENGTH:
            raise ValueError(f"horizon must be at most {MAX_PATH_LENGTH} (Meta-World's episode length), got {horizon}")
        self._bench = _benchmark(self.BENCHMARK, env_name, benchmark_seed)
        self._classes = {"train": dict(self._bench.train_classes), "test": dict(self._bench.test_classes)}
        self._tasks = {"train": list(self._bench.train_tasks), "test": list(self._bench.test_tasks)}
        self._by_class = {
            split: {name: [i for i, t in enumerate(tasks) if t.env_name == name] for name in self._classes[split]}
            for split, tasks in self._tasks.items()
        }
        self._envs: dict[str, Any] = {}
        self._env: Any = None
        self._t = 0
        self._set_default_task(task)
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space

    def class_names(self, split: str) -> list[str]:
        """The environment classes of ``split`` (one for ML1; ten train and five test ones for ML10)."""
        return list(self._classes[split])

    def sample_tasks(self, n: int, rng: np.random.Generator | int, split: str = "train") -> list[Task]:
        """``n`` goals of ``split``, balanced over its environment classes and without repeats until a class's 50
        goals are used up: task ``i`` is of class ``order[i % C]`` (``order`` a random permutation of the C classes),
        and each class hands out its goals in a random order, starting over when they run out."""
        count = check_count(n)
        generator = task_generator(rng, split)
        names = self.class_names(split)
        order = [names[i] for i in generator.permutation(len(names))]
        queues: dict[str, list[int]] = {name: [] for name in names}
        tasks = []
        for i in range(count):
            name = order[i % len(order)]
            if not queues[name]:
                pool = self._by_class[split][name]
                queues[name] = [pool[j] for j in generator.permutation(len(pool))]
            tasks.append({"env_name": name, "split": split, "index": int(queues[name].pop(0))})
        return tasks

    def _apply_task(self, task: Mapping[str, Any]) -> Task:
        family = type(self).__name__
        split, index, name = task["split"], task["index"], task["env_name"]
        if split not in SPLITS:
            raise ValueError(f"{family} task['split'] must be one of {SPLITS}, got {split!r}")
        tasks = self._tasks[split]
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not 0 <= index < len(tasks):
            raise ValueError(f"{family} task['index'] must be an int in [0, {len(tasks)}), got {index!r}")
        chosen = tasks[int(index)]
        if chosen.env_name != name:
            raise ValueError(f"{family} task: {split} goal {index} belongs to {chosen.env_name!r}, not {name!r}")
        if name not in self._envs:
            self._envs[name] = self._classes[split][name]()
        self._env = self._envs[name]
        self._env.set_task(chosen)
        return {"env_name": name, "split": split, "index": int(index)}

    def goal(self) -> np.ndarray:
        """The current task's goal position (x, y, z), set after a reset (Meta-World hides it from the observation)."""
        return np.array(self._env._target_pos, dtype=np.float64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._begin_episode(options)
        observation, info = self._env.reset()
        return observation, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {action.shape}")
        observation, reward, _, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        self._t += 1
        return observation, float(reward), False, self._t >= self.horizon, info

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


class MetaWorldML1(_MetaWorldTasks):
    """ML1: one Meta-World environment (``env_name``, default ``reach-v3``), 50 training and 50 held-out goals."""

    BENCHMARK = "ML1"
    TASK_PARAMETERS = "one of the 50 goals of env_name's split (Meta-World ML1)"

    def __init__(
        self,
        env_name: str = "reach-v3",
        benchmark_seed: int = 0,
        horizon: int = MAX_PATH_LENGTH,
        task: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(env_name, benchmark_seed, horizon, task)


class MetaWorldML10(_MetaWorldTasks):
    """ML10: ten training environments and five held-out ones, 50 goals each (Meta-World ML10)."""

    BENCHMARK = "ML10"
    TASK_PARAMETERS = "a goal of one of 10 train / 5 test environment classes (Meta-World ML10)"

    def __init__(
        self, benchmark_seed: int = 0, horizon: int = MAX_PATH_LENGTH, task: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(None, benchmark_seed, horizon, task)
