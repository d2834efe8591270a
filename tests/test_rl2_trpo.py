"""RL^2 with the paper's TRPO outer loop (``rl2.outer: trpo``): the step against an explicit Fisher solve in float64,
the trust region on the batch, the value fitted separately, and the config check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from metarl.algorithms.rl2 import RL2
from metarl.algorithms.trial_trpo import trpo_policy_step
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.config_sections import TRPOConfig
from metarl.ppo import masked_normalize, trial_gae
from metarl.sampling import make_sampler
from metarl_envs import Bandit, Navigation2D


def algorithm_and_batch(env_id, space, env_kwargs, **rl2):
    config = config_from_dict(
        {
            "algorithm": "rl2",
            "env": {"id": env_id, "kwargs": env_kwargs},
            "rl2": {"hidden_size": 6, "separate_value": True, "outer": "trpo", "episodes_per_trial": 3, **rl2},
        }
    )
    torch.manual_seed(0)
    algorithm = RL2(config, space.observation_space, space.action_space, torch.device("cpu"))
    tasks = space.sample_tasks(6, np.random.default_rng(1), split="train")
    with make_sampler(env_id, env_kwargs, backend="local") as sampler:
        batch = algorithm.sample_trials(sampler, tasks, trials=1, seed=2)
    return algorithm, batch.to_torch()


class Unrolled(nn.Module):
    """The agent's unroll as a forward, so ``functional_call`` can swap its parameters."""

    def __init__(self, agent: nn.Module) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, obs, actions, rewards, mask):
        return self.agent.unroll(obs, actions, rewards, mask)[0]


@pytest.mark.parametrize(("hvp", "stride"), [("gauss_newton", 1), ("double_backward", 1), ("gauss_newton", 2)])
@pytest.mark.parametrize("continuous", [False, True])
def test_trpo_step_is_the_scaled_solution_of_the_damped_fisher_system_in_float64(continuous, hvp, stride):
    if continuous:
        env_id, space, kwargs = "metarl/Navigation2D-v0", Navigation2D(horizon=4), {"horizon": 4}
    else:
        env_id, space, kwargs = "metarl/Bandit-v0", Bandit(), {}
    algorithm, batch = algorithm_and_batch(env_id, space, kwargs)
    agent = algorithm.policy.double()
    trials = {k: v.double() if v.is_floating_point() else v for k, v in algorithm.lanes(batch).items()}
    num = trials["rewards"].shape[0]
    mask = trials["mask"].reshape(num, -1)
    with torch.no_grad():
        _, values, _ = agent.unroll(trials["obs"], trials["actions"], trials["rewards"], trials["mask"])
        advantages, _ = trial_gae(trials["rewards"].reshape(num, -1), values.reshape(num, -1), mask, 0.99, 0.3)
        # x 1e6: conjugate gradient stops at a squared residual of 1e-10, so a large gradient makes its solve exact to
        # ~1e-9 relative; the step itself does not depend on the gradient's scale (it is rescaled to the trust region)
        advantages = 1e6 * masked_normalize(advantages, mask)
    policy = agent.parameter_groups()[0]
    names = {id(p): "agent." + n for n, p in agent.named_parameters()}
    x0 = parameters_to_vector(policy).detach().clone()
    trpo = TRPOConfig(max_kl=0.01, cg_iters=x0.numel(), cg_damping=0.1, hvp=hvp)
    inputs = (trials["obs"], trials["actions"], trials["rewards"], trials["mask"])
    wrapper = Unrolled(agent)
    old = tuple(t.detach() for t in wrapper(*inputs))
    old_log_probs = agent.log_prob(old, trials["actions"]).reshape(num, -1)
    count = mask.sum()

    def dist_at(x):
        sizes = [p.numel() for p in policy]
        chunks = [c.view_as(p) for c, p in zip(torch.split(x, sizes), policy, strict=True)]
        return functional_call(wrapper, {names[id(p)]: c for p, c in zip(policy, chunks, strict=True)}, inputs)

    def surrogate(x):
        ratio = torch.exp(agent.log_prob(dist_at(x), trials["actions"]).reshape(num, -1) - old_log_probs)
        return (ratio * advantages * mask).sum() / count

    def kl(x, rows=slice(None)):  # the mean KL over the trials ``rows``
        per_step = agent.kl(old, dist_at(x)).reshape(num, -1)[rows]
        return (per_step * mask[rows]).sum() / mask[rows].sum()

    g = torch.autograd.functional.jacobian(surrogate, x0)
    curvature = torch.autograd.functional.hessian(lambda x: kl(x, slice(None, None, stride)), x0)
    fisher = curvature + trpo.cg_damping * torch.eye(x0.numel(), dtype=x0.dtype)
    d = torch.linalg.solve(fisher, g)
    expected = d * torch.sqrt(2 * trpo.max_kl / (d @ fisher @ d))

    unroll = Unrolled(agent)
    metrics = trpo_policy_step(
        agent,
        policy,
        lambda t: unroll(t["obs"], t["actions"], t["rewards"], t["mask"]),
        trials,
        advantages,
        mask,
        trpo,
        fisher_stride=stride,
    )
    assert metrics["accepted"] == 1.0 and metrics["surrogate_after"] > metrics["surrogate_before"]
    moved = (parameters_to_vector(policy).detach() - x0) / metrics["step_fraction"]
    torch.testing.assert_close(moved, expected, rtol=1e-6, atol=1e-9)
    assert float(kl(parameters_to_vector(policy).detach())) == pytest.approx(metrics["kl"], rel=1e-9)
    assert metrics["kl"] <= trpo.max_kl


def test_rl2_trpo_update_keeps_the_trust_region_and_fits_the_value_apart():
    algorithm, batch = algorithm_and_batch("metarl/Bandit-v0", Bandit(), {}, epochs=3, lr=1e-2)
    policy_params, value_params = algorithm.policy.parameter_groups()
    policy_before = [p.detach().clone() for p in policy_params]
    value_before = [p.detach().clone() for p in value_params]
    trials = algorithm.lanes(batch)
    with torch.no_grad():
        old, _, _ = algorithm.policy.unroll(trials["obs"], trials["actions"], trials["rewards"], trials["mask"])
    metrics = algorithm.update(batch, seed=3)
    assert metrics["accepted"] == 1.0 and metrics["surrogate_after"] > metrics["surrogate_before"]
    assert 0.0 < metrics["kl"] <= algorithm.config.trpo.max_kl
    assert "approx_kl" not in metrics and "clip_fraction" not in metrics
    with torch.no_grad():
        new, _, _ = algorithm.policy.unroll(trials["obs"], trials["actions"], trials["rewards"], trials["mask"])
    mask = trials["mask"]
    measured = float((algorithm.policy.kl(old, new) * mask).sum() / mask.sum())
    assert measured == pytest.approx(metrics["kl"], rel=1e-4)  # the value epochs did not move the policy
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, policy_params, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(value_before, value_params, strict=True))


def test_trpo_without_a_separate_value_is_one_line_exit_2(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    args = ["--set", "rl2.outer=trpo", "--set", "rl2.separate_value=false", "--set", "sampler.backend=local"]
    assert main(["train", "experiments/rl2_bandit_k5_n10.yaml", "--run-dir", str(run), *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rl2.outer" in err and "separate_value" in err
    assert not run.exists()
