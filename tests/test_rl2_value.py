"""RL^2's options: ``separate_value`` (the value head on a GRU of its own, the networks' gradients clipped apart)
and ``head_init_scale`` (small initial action means)."""

import numpy as np
import pytest
import torch
from test_rl2 import rl2_algorithm

from metarl.models.gru import RL2Agent
from metarl.sampling import make_sampler

NAV = "metarl/Navigation2D-v0"


def nav_batch(algorithm, space, seed=5):
    tasks = space.sample_tasks(4, np.random.default_rng(2), split="train")
    with make_sampler(NAV, {"horizon": 6}, backend="local") as sampler:
        return algorithm.sample_trials(sampler, tasks, trials=1, seed=seed).to_torch()


def test_parameter_groups_split_policy_and_value_networks():
    shared = RL2Agent(3, 2, discrete=False, hidden_size=4)
    assert [len(g) for g in shared.parameter_groups()] == [len(list(shared.parameters()))]
    agent = RL2Agent(3, 2, discrete=False, hidden_size=4, separate_value=True)
    policy, value = agent.parameter_groups()
    assert {id(p) for p in policy} | {id(p) for p in value} == {id(p) for p in agent.parameters()}
    assert not {id(p) for p in policy} & {id(p) for p in value}
    assert {id(p) for p in value} == {
        id(p) for m in (agent.value_input_gates, agent.value_hidden_gates, agent.value) for p in m.parameters()
    }


def test_policy_and_value_outputs_depend_only_on_their_own_network():
    torch.manual_seed(0)
    agent = RL2Agent(2, 2, discrete=False, hidden_size=8, separate_value=True)
    lanes, k, horizon = 3, 2, 5
    obs, actions = torch.randn(lanes, k, horizon, 2), torch.randn(lanes, k, horizon, 2)
    rewards, mask = torch.randn(lanes, k, horizon), torch.ones(lanes, k, horizon)
    mask[0, 1, 3:] = 0  # an early termination
    (mean, _), values, _ = agent.unroll(obs, actions, rewards, mask)
    with torch.no_grad():
        agent.value_hidden_gates.weight.add_(0.5)
    (mean_2, _), values_2, _ = agent.unroll(obs, actions, rewards, mask)
    assert torch.equal(mean, mean_2) and not torch.allclose(values, values_2)
    with torch.no_grad():
        agent.hidden_gates.weight.add_(0.5)
    (mean_3, _), values_3, _ = agent.unroll(obs, actions, rewards, mask)
    assert torch.equal(values_2, values_3) and not torch.allclose(mean_2, mean_3)
    # the value network is recurrent: an earlier reward changes later values, never earlier ones
    rewards_4 = rewards.clone()
    rewards_4[:, 0, 2] += 1.0
    _, values_4, _ = agent.unroll(obs, actions, rewards_4, mask)
    flat, flat_4 = values_3.reshape(lanes, -1), values_4.reshape(lanes, -1)
    assert torch.equal(flat[:, :3], flat_4[:, :3]) and not torch.allclose(flat[:, 3:], flat_4[:, 3:])


@pytest.mark.parametrize("separate_value", [True, False])
def test_value_loss_weight_moves_the_policy_only_when_the_gru_is_shared(separate_value):
    """Separate: the policy network's update is the same for any ``value_coef`` (no value gradient reaches it, and
    its gradient norm is clipped on its own); shared: the value loss changes it (what the option is for)."""
    kwargs = {"episodes_per_trial": 2, "epochs": 2, "minibatches": 2, "lr": 1e-2, "separate_value": separate_value}
    light, space = rl2_algorithm(NAV, value_coef=0.5, **kwargs)
    heavy, _ = rl2_algorithm(NAV, value_coef=50.0, **kwargs)
    batch = nav_batch(light, space)
    metrics = [alg.update(batch, seed=7) for alg in (light, heavy)]
    assert metrics[0]["log_prob_gap"] < 1e-5
    policy_light, policy_heavy = (alg.policy.parameter_groups()[0] for alg in (light, heavy))
    same = all(torch.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(policy_light, policy_heavy, strict=True))
    assert same == separate_value
    if separate_value:
        assert metrics[0]["grad_norm"] == pytest.approx(metrics[1]["grad_norm"], rel=1e-5)
        assert metrics[1]["value_grad_norm"] > 10 * metrics[0]["value_grad_norm"]
    else:
        assert "value_grad_norm" not in metrics[0]


@pytest.mark.parametrize("discrete", [False, True])
def test_head_init_scale_scales_the_initial_action_head_and_nothing_else(discrete):
    agents = []
    for scale in (1.0, 0.01):
        torch.manual_seed(3)
        agents.append(RL2Agent(2, 3, discrete=discrete, hidden_size=8, init_std=0.1, head_init_scale=scale))
    default, small = agents
    obs = torch.randn(2, 2, 4, 2)
    actions = torch.randint(0, 3, (2, 2, 4)) if discrete else torch.randn(2, 2, 4, 3)
    rewards, mask = torch.randn(2, 2, 4), torch.ones(2, 2, 4)
    out_default, values_default, _ = default.unroll(obs, actions, rewards, mask)
    out_small, values_small, _ = small.unroll(obs, actions, rewards, mask)
    assert torch.allclose(out_small[0], 0.01 * out_default[0], atol=1e-7)  # means or logits: linear in the head
    assert out_default[0].abs().max() > 0.05
    assert torch.equal(values_default, values_small)
    head = "logits" if discrete else "mean"
    for (name, p), q in zip(default.named_parameters(), small.parameters(), strict=True):
        assert torch.allclose(q, 0.01 * p) if name.startswith(head) else torch.equal(p, q)


def test_target_kl_ends_the_update_at_the_first_minibatch_past_it():
    """A tiny ``target_kl`` stops after one step (the next minibatch's policy has moved), so the update equals one of
    a single epoch with the same first minibatch; a huge one changes nothing against no ``target_kl``."""
    kwargs = {"episodes_per_trial": 2, "minibatches": 2, "lr": 1e-2}
    full, space = rl2_algorithm(NAV, epochs=3, **kwargs)
    huge, _ = rl2_algorithm(NAV, epochs=3, target_kl=1e9, **kwargs)
    tiny, _ = rl2_algorithm(NAV, epochs=3, target_kl=1e-6, **kwargs)
    tiny_one_epoch, _ = rl2_algorithm(NAV, epochs=1, target_kl=1e-6, **kwargs)
    start = [p.detach().clone() for p in full.policy.parameters()]
    batch = nav_batch(full, space)
    metrics = [alg.update(batch, seed=7) for alg in (full, huge, tiny, tiny_one_epoch)]
    params = [list(alg.policy.parameters()) for alg in (full, huge, tiny, tiny_one_epoch)]
    assert all(torch.equal(a, b) for a, b in zip(params[0], params[1], strict=True))
    assert "updates" not in metrics[0] and metrics[1]["updates"] == 6.0
    assert metrics[2]["updates"] == 1.0 and metrics[3]["updates"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(params[2], params[3], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(params[2], start, strict=True))
    assert not all(torch.allclose(a, b) for a, b in zip(params[2], params[0], strict=True))
