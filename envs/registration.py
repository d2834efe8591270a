"""Gymnasium registration of every family under the ``metarl/`` namespace, and their descriptions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

# id -> entry point; no max_episode_steps: each env truncates itself at its own ``horizon``.
FAMILIES: dict[str, str] = {
    "metarl/Navigation2D-v0": "metarl_envs.navigation:Navigation2D",
    "metarl/HalfCheetahVel-v0": "metarl_envs.half_cheetah:HalfCheetahVel",
    "metarl/HalfCheetahDir-v0": "metarl_envs.half_cheetah:HalfCheetahDir",
    "metarl/AntVel-v0": "metarl_envs.ant:AntVel",
    "metarl/AntDir-v0": "metarl_envs.ant:AntDir",
    "metarl/Bandit-v0": "metarl_envs.bandit:Bandit",
    "metarl/TabularMDP-v0": "metarl_envs.tabular_mdp:TabularMDP",
}
# Families whose module needs an optional extra (registered too; building one without its extra raises ImportError).
EXTRA_FAMILIES: dict[str, str] = {
    "metarl/MetaWorldML1-v0": "metarl_envs.meta_world:MetaWorldML1",
    "metarl/MetaWorldML10-v0": "metarl_envs.meta_world:MetaWorldML10",
}
EXTRA_INSTALL = 'pip install -e ".[metaworld]"'  # the extra that provides them


def register_all() -> None:
    """Register every family with gymnasium (idempotent: ids already registered are left alone)."""
    for env_id, entry_point in FAMILIES.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)
    for env_id, entry_point in EXTRA_FAMILIES.items():  # Meta-World's goal slots are Box bounds [0, 0]: no checker
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True)


def describe_families() -> list[dict[str, Any]]:
    """One row per family: id, family, task_parameters, horizon, observation_space, action_space, paper.

    Constructs each env once (the MuJoCo ones load their model) to read its spaces and default horizon. A family whose
    optional extra is missing gets a row that says how to install it instead.
    """
    rows = []
    for env_id, entry_point in {**FAMILIES, **EXTRA_FAMILIES}.items():
        try:
            cls = load_env_creator(entry_point)
        except ImportError:
            if env_id not in EXTRA_FAMILIES:
                raise
            rows.append({"id": env_id, "family": entry_point.split(":")[1], "not_installed": EXTRA_INSTALL})
            continue
        env = cls()
        try:
            rows.append(
                {
                    "id": env_id,
                    "family": cls.__name__,
                    "task_parameters": cls.TASK_PARAMETERS,
                    "horizon": int(env.horizon),
                    "observation_space": str(env.observation_space),
                    "action_space": str(env.action_space),
                    "paper": cls.PAPER,
                }
            )
        finally:
            env.close()
    return rows
