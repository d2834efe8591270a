"""Task-distribution environments (gymnasium API). Imports nothing from metarl.

Families: ``Navigation2D`` (+ ``BatchedNavigation2D``), ``HalfCheetahVel``, ``HalfCheetahDir``, ``AntVel``,
``AntDir``, ``Bandit``, ``TabularMDP``, and with the ``metaworld`` extra ``MetaWorldML1`` and ``MetaWorldML10``
(``EXTRA_FAMILIES``); each has ``sample_tasks(n, rng, split)`` (on the class or an instance)
and ``set_task``/``get_task`` on the env. ``register_all()`` registers them as ``metarl/<Family>-v0``; through
``gymnasium.make`` reach the methods with ``env.unwrapped``. The MuJoCo families are imported lazily (on first
attribute access) so ``import metarl_envs`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metarl_envs.bandit import Bandit
from metarl_envs.navigation import BatchedNavigation2D, Navigation2D
from metarl_envs.registration import EXTRA_FAMILIES, FAMILIES, describe_families, register_all
from metarl_envs.tabular_mdp import TabularMDP
from metarl_envs.tasks import SPLITS, Task, TaskFamily, task_generator

if TYPE_CHECKING:
    from metarl_envs.ant import AntDir, AntVel
    from metarl_envs.half_cheetah import HalfCheetahDir, HalfCheetahVel
    from metarl_envs.meta_world import MetaWorldML1, MetaWorldML10

_LAZY = {
    "HalfCheetahVel": "metarl_envs.half_cheetah",
    "HalfCheetahDir": "metarl_envs.half_cheetah",
    "AntVel": "metarl_envs.ant",
    "AntDir": "metarl_envs.ant",
    "MetaWorldML1": "metarl_envs.meta_world",
    "MetaWorldML10": "metarl_envs.meta_world",
}

__all__ = [
    "EXTRA_FAMILIES",
    "FAMILIES",
    "SPLITS",
    "AntDir",
    "AntVel",
    "Bandit",
    "BatchedNavigation2D",
    "HalfCheetahDir",
    "HalfCheetahVel",
    "MetaWorldML1",
    "MetaWorldML10",
    "Navigation2D",
    "TabularMDP",
    "Task",
    "TaskFamily",
    "describe_families",
    "register_all",
    "task_generator",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metarl_envs' has no attribute {name!r}")
