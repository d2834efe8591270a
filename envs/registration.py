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


def register_all() -> None:
    """Register every family with gymnasium (idempotent: ids already registered are left alone)."""
    for env_id, entry_point in FAMILIES.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


def describe_families() -> list[dict[str, Any]]:
    """One row per family: id, family, task_parameters, horizon, observation_space, action_space, paper.

    Constructs each env once (the MuJoCo ones load their model) to read its spaces and default horizon.
    """
    rows = []
    for env_id, entry_point in FAMILIES.items():
        cls = load_env_creator(entry_point)
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
