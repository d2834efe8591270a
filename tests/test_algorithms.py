"""The algorithm interface: registry, protocol methods of each algorithm, checkpoint round trip."""

import numpy as np
import pytest
import torch

from metarl.algorithms import REGISTRY, algorithm_class, build_algorithm
from metarl.config import ConfigError, config_from_dict
from metarl.sampling import make_sampler
from metarl.train import make_env

CASES = {
    "maml_trpo": {
        "algorithm": "maml_trpo",
        "env": {"id": "metarl/Navigation2D-v0", "kwargs": {"horizon": 4}},
        "policy": {"hidden_sizes": [8]},
        "maml": {"meta_batch_size": 2, "episodes_per_task": 2},
    },
    "reptile": {
        "algorithm": "reptile",
        "env": {"id": "metarl/Navigation2D-v0", "kwargs": {"horizon": 4}},
        "policy": {"hidden_sizes": [8]},
        "maml": {"meta_batch_size": 2, "episodes_per_task": 2},
        "reptile": {"inner_steps": 2},
    },
    "rl2": {
        "algorithm": "rl2",
        "env": {"id": "metarl/Bandit-v0"},
        "rl2": {"tasks_per_iteration": 3, "episodes_per_trial": 4, "hidden_size": 8},
    },
    "snail": {
        "algorithm": "snail",
        "env": {"id": "metarl/Bandit-v0"},
        "snail": {"tasks_per_iteration": 3, "episodes_per_trial": 4},
    },
}


def test_registry_names_every_meta_rl_algorithm_and_refuses_others():
    assert set(REGISTRY) == set(CASES)
    with pytest.raises(ConfigError, match="valid: maml_trpo, rl2, reptile, snail"):
        algorithm_class("snail2")


@pytest.mark.parametrize("name", sorted(CASES))
def test_protocol_collect_update_evaluate_and_checkpoint_round_trip(name):
    config = config_from_dict(CASES[name])
    env = make_env(config)
    torch.manual_seed(0)
    algorithm = build_algorithm(config, env, torch.device("cpu"))
    assert algorithm.name == name
    tasks = env.unwrapped.sample_tasks(algorithm.tasks_per_iteration, np.random.default_rng(0), split="train")
    before = {k: v.clone() for k, v in algorithm.policy.state_dict().items()}
    with make_sampler(config.env.id, config.env.kwargs, backend="local") as sampler:
        result = algorithm.collect_and_update(sampler, tasks, lambda phase: 100 + phase)
        returns = algorithm.evaluation_returns(sampler, tasks[:2], 2, seed=5)
    assert result.env_steps > 0 and "time_update_s" in result.metrics
    assert all(isinstance(v, float) for v in result.metrics.values())
    assert any(not torch.equal(before[k], v) for k, v in algorithm.policy.state_dict().items())
    # MAML: returns after 0..3 gradient steps; RL^2: per episode of a 4-episode trial
    assert returns.shape == (2, 4) and np.isfinite(returns).all()

    torch.manual_seed(1)
    fresh = build_algorithm(config, env, torch.device("cpu"))
    fresh.load_state_dict(algorithm.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.policy.parameters(), algorithm.policy.parameters(), strict=True))
    env.close()
