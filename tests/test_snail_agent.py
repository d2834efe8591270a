"""The SNAIL trial agent: incremental inference equals the full forward, causality, the cache restarts between trials,
log-probabilities recomputed at update time equal the sampled ones (local and Ray), and the algorithm through
``metarl train`` / ``--resume`` / ``metarl evaluate``."""

import json
import math

import numpy as np
import pytest
import torch
from cli_runs import interrupted_and_straight, sets, train

from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.cli import main
from metarl.config import ConfigError, config_from_dict
from metarl.models.snail import PRESETS, SNAIL
from metarl.models.snail_agent import SNAILAgent
from metarl.recurrent import NO_ACTION
from metarl.sampling import make_sampler

BANDIT = "experiments/snail_bandit_k5_n10.yaml"
TINY = [
    "sampler.backend=local",
    "snail.tasks_per_iteration=4",
    "snail.trials_per_task=2",
    "snail.episodes_per_trial=3",
    "snail.minibatches=2",
    "snail.epochs=2",
    "logging.checkpoint_every=2",
    "logging.tensorboard=false",
]


def rows(run):
    import csv

    with (run / "progress.csv").open(newline="") as handle:
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in csv.DictReader(handle)]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_network_step_by_step_equals_the_full_forward_in_float64(preset):
    torch.manual_seed(0)
    steps = 11  # dilations 2..16: the last two never reach a real step and keep no cache
    net = SNAIL(7, steps, preset, 3).double()
    x = torch.randn(4, steps, 7, dtype=torch.float64)
    cache, outs = net.initial_cache(4), []
    for t in range(steps):
        out, cache = net.step(x[:, t], cache)
        outs.append(out)
    torch.testing.assert_close(torch.stack(outs, 1), net(x), rtol=0, atol=1e-10)
    assert int(cache["pos"][0]) == steps
    # The cache has a fixed size: it does not grow with the steps taken.
    assert {k: v.shape for k, v in cache.items()} == {k: v.shape for k, v in net.initial_cache(4).items()}


def random_trials(discrete, lanes=3, k=3, horizon=4, obs_dim=5, action_dim=2, seed=0):
    """Recorded-looking trials with early terminations (mask 0 after a lane's episode ended)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(lanes, k, horizon, obs_dim, generator=g, dtype=torch.float64)
    if discrete:
        actions = torch.randint(action_dim, (lanes, k, horizon), generator=g)
    else:
        actions = torch.randn(lanes, k, horizon, action_dim, generator=g, dtype=torch.float64)
    rewards = torch.randn(lanes, k, horizon, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, horizon + 1, (lanes, k), generator=g)
    lengths[0] = horizon  # one lane without early terminations
    mask = (torch.arange(horizon) < lengths.unsqueeze(-1)).double()
    return obs, actions, rewards, mask


def stepwise_log_probs(agent, obs, actions, rewards, mask, reset_every_episode=False):
    """The sampler's convention, one lane at a time with ``agent.forward``: cache carried across the episodes of a
    trial (``reset_every_episode``: restarted every episode, inputs still carried), masked steps skipped."""
    lanes, k, horizon = rewards.shape
    out = torch.zeros(lanes, k, horizon, dtype=torch.float64)
    for lane in range(lanes):
        state = agent.initial_state(1)
        prev_a = torch.tensor([NO_ACTION]) if agent.discrete else torch.zeros(1, agent.action_dim, dtype=obs.dtype)
        prev_r, prev_d = torch.zeros(1, dtype=obs.dtype), torch.zeros(1, dtype=obs.dtype)
        for e in range(k):
            if reset_every_episode:
                state = agent.initial_state(1)
            for t in range(horizon):
                if mask[lane, e, t] == 0:
                    break
                dist, state = agent(obs[lane, e, t][None], prev_a, prev_r, prev_d, state)
                out[lane, e, t] = agent.log_prob(dist, actions[lane, e, t][None])[0]
                ended = t == horizon - 1 or mask[lane, e, t + 1] == 0
                prev_a, prev_r = actions[lane, e, t][None], rewards[lane, e, t][None]
                prev_d = torch.tensor([1.0 if ended else 0.0], dtype=obs.dtype)
    return out


@pytest.mark.parametrize("discrete", [True, False])
def test_agent_acting_step_by_step_equals_unroll_in_float64(discrete):
    """Discrete and Gaussian heads, with early terminations: the log-probabilities of acting step by step from the
    cache equal those of the full-sequence recomputation to 1e-10."""
    torch.manual_seed(1)
    agent = SNAILAgent(5, 2, discrete, max_steps=12).double()
    obs, actions, rewards, mask = random_trials(discrete)
    assert (mask == 0).any()
    with torch.no_grad():
        dist, values, _ = agent.unroll(obs, actions, rewards, mask)
        full = agent.log_prob(dist, actions) * mask
        stepwise = stepwise_log_probs(agent, obs, actions, rewards, mask)
    torch.testing.assert_close(stepwise, full, rtol=0, atol=1e-10)
    assert values.shape == rewards.shape and torch.isfinite(values).all()


def test_agent_is_causal_over_the_trial():
    """Changing step s of a trial (its observation, or its action and reward, which the next step reads) never
    changes an earlier step's distribution or value, and does change later ones."""
    torch.manual_seed(2)
    agent = SNAILAgent(5, 2, True, max_steps=12).double()
    obs, actions, rewards, mask = random_trials(True, lanes=2, seed=3)
    mask = torch.ones_like(mask)
    with torch.no_grad():
        (logits,), values, _ = agent.unroll(obs, actions, rewards, mask)
        logits, values = logits.reshape(2, 12, 2), values.reshape(2, 12)
        for s in (0, 5, 10):
            e, t = divmod(s, 4)
            o, r = obs.clone(), rewards.clone()
            o[:, e, t] += 5.0
            r[:, e, t] += 5.0
            (changed,), changed_values, _ = agent.unroll(o, actions, r, mask)
            changed, changed_values = changed.reshape(2, 12, 2), changed_values.reshape(2, 12)
            torch.testing.assert_close(changed[:, :s], logits[:, :s], rtol=0, atol=0)
            torch.testing.assert_close(changed_values[:, :s], values[:, :s], rtol=0, atol=0)
            assert (changed[:, s:] - logits[:, s:]).abs().amax() > 1e-6
            assert (changed_values[:, s:] - values[:, s:]).abs().amax() > 1e-6


def snail_algorithm(env, **snail):
    from metarl.algorithms import build_algorithm
    from metarl.train import make_env

    config = config_from_dict({"algorithm": "snail", "env": {"id": env[0], "kwargs": env[1]}, "snail": snail})
    space = make_env(config)
    torch.manual_seed(1)
    return build_algorithm(config, space, torch.device("cpu")), space.unwrapped


def test_cache_carries_over_episodes_of_a_trial_and_restarts_between_trials():
    """TabularMDP, 2 trials of 3 episodes per task: the sampler's log-probabilities are a step-by-step replay that
    carries the cache across episodes and restarts it at each trial; restarting it every episode gives other values
    from the second episode on; the second trial starts exactly like a fresh one."""
    algorithm, space = snail_algorithm(("metarl/TabularMDP-v0", {"horizon": 4}), episodes_per_trial=3)
    agent = algorithm.policy
    tasks = space.sample_tasks(2, np.random.default_rng(0), split="train")
    with make_sampler("metarl/TabularMDP-v0", {"horizon": 4}, backend="local") as sampler:
        batch = algorithm.sample_trials(sampler, tasks, trials=2, seed=5)
    b = batch.to_torch()
    trials = algorithm.lanes(b)
    recorded = trials["old_log_probs"].double()
    args = (trials["obs"], trials["actions"], trials["rewards"], trials["mask"])
    with torch.no_grad():
        carried = stepwise_log_probs(agent, *args)
        restarted = stepwise_log_probs(agent, *args, reset_every_episode=True)
    torch.testing.assert_close(recorded, carried, rtol=0, atol=2e-5)
    torch.testing.assert_close(recorded[:, 0], restarted[:, 0], rtol=0, atol=2e-5)
    assert (recorded[:, 1:] - restarted[:, 1:]).abs().amax() > 1e-3
    # Trial 2 of a task (lanes 1 and 3) starts as a fresh trial: same first observation, no inputs, empty cache.
    first_obs = b.observations[:, 3, 0]
    fresh, _ = agent(first_obs, torch.full((2,), NO_ACTION), torch.zeros(2), torch.zeros(2), agent.initial_state(2))
    torch.testing.assert_close(
        b.log_probs[:, 3, 0], agent.log_prob(fresh, b.actions[:, 3, 0]).detach(), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        (("metarl/Bandit-v0", {}), "local"),
        (("metarl/TabularMDP-v0", {"horizon": 4}), "local"),
        (("metarl/Navigation2D-v0", {"horizon": 6}), "local"),
        (("metarl/TabularMDP-v0", {"horizon": 4}), "ray"),
    ],
)
def test_log_probs_recomputed_at_update_equal_the_sampled_ones(env, backend):
    """What PPO's ratio starts from: the full-sequence recomputation gives back the log-probabilities recorded while
    acting from the cache (discrete and Gaussian heads; in-process and Ray workers)."""
    algorithm, space = snail_algorithm(env, episodes_per_trial=3)
    tasks = space.sample_tasks(3, np.random.default_rng(2), split="train")
    with make_sampler(env[0], env[1], backend=backend, num_workers=1) as sampler:
        batch = algorithm.sample_trials(sampler, tasks, trials=2, seed=7)
    b = batch.to_torch()
    with torch.no_grad():
        log_probs, _, _ = algorithm.recompute(algorithm.lanes(b))
    recorded, mask = b.log_probs.reshape(log_probs.shape), b.mask.reshape(log_probs.shape)
    assert mask.sum() > 0
    torch.testing.assert_close(log_probs * mask, recorded * mask, rtol=0, atol=2e-5)
    # The check can fail: the same trials recomputed without their rewards give other log-probabilities.
    trials = algorithm.lanes(b)
    trials["rewards"] = trials["rewards"] + 1.0
    with torch.no_grad():
        shifted, _, _ = algorithm.recompute(trials)
    assert ((shifted - recorded) * mask).abs().amax() > 1e-4


def test_unknown_preset_and_overlong_trials_are_refused():
    with pytest.raises(ConfigError, match="snail.policy_blocks"):
        snail_algorithm(("metarl/Bandit-v0", {}), policy_blocks="bandit")
    agent = SNAILAgent(1, 2, True, max_steps=4)
    obs, actions, rewards, mask = random_trials(True, lanes=1, k=2, horizon=3, obs_dim=1)
    with pytest.raises(ValueError, match="exceed"):
        agent.unroll(obs.float(), actions, rewards.float(), mask.float())


def test_one_iteration_through_metarl_train(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    for env in ([], ["env.id=metarl/Navigation2D-v0", "env.kwargs={horizon: 3}"]):
        run = tmp_path / f"run{len(env)}"
        assert train(BANDIT, "--run-dir", str(run), *sets("iterations=1", *TINY, *env)) == 0
        (row,) = rows(run)
        assert row["iteration"] == "1" and int(row["env_steps"]) > 0 and math.isfinite(float(row["trial_return"]))
        assert float(row["log_prob_gap"]) < 1e-4
        assert load_checkpoint(latest_checkpoint(run))["iteration"] == 1


def test_interrupted_snail_run_resumes_exactly(tmp_path, repo_root, monkeypatch):
    """SIGINT during iteration 3 (checkpoints every 2): ``--resume`` ends bit for bit where an uninterrupted
    4-iteration run ends (agent, Adam state, progress rows)."""
    monkeypatch.chdir(repo_root)
    straight, stopped = interrupted_and_straight(BANDIT, TINY, tmp_path, monkeypatch)
    assert rows(straight) == rows(stopped) and len(rows(stopped)) == 4
    a, b = (load_checkpoint(latest_checkpoint(run))["algorithm"] for run in (straight, stopped))
    assert a["agent"].keys() == b["agent"].keys()
    assert all(torch.equal(a["agent"][k], b["agent"][k]) for k in a["agent"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, state in a["optimizer"]["state"].items():
        assert all(torch.equal(state[n], b["optimizer"]["state"][key][n]) for n in state)


def test_evaluate_a_snail_run_per_episode_of_the_trial(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert train(BANDIT, "--run-dir", str(run), *sets("iterations=2", *TINY)) == 0
    base = ["evaluate", str(run), "--tasks", "5", "--episodes", "3", "--backend", "local"]
    assert main(base) == 0 and main([*base, "--baseline", "ucb1"]) == 0
    assert "trial return" in capsys.readouterr().out
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    entry = summary["methods"]["snail"]
    assert entry["iteration"] == 2 and entry["episodes_per_trial"] == 3 and len(entry["steps"]) == 3
    assert "ucb1" in summary["methods"]
    first = (run / "evaluation" / "adaptation_snail.csv").read_text()
    assert main(base) == 0 and (run / "evaluation" / "adaptation_snail.csv").read_text() == first
    assert main(["plot", str(run), "-o", str(tmp_path / "trial.png")]) == 0


def test_every_snail_experiment_loads_and_builds(repo_root):
    from metarl.algorithms import build_algorithm
    from metarl.config import load_config
    from metarl.train import make_env

    paths = sorted((repo_root / "experiments").glob("snail_*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        config = load_config(path)
        env = make_env(config)
        algorithm = build_algorithm(config, env, torch.device("cpu"))
        assert algorithm.name == "snail" and algorithm.policy.max_steps == config.snail.episodes_per_trial * int(
            env.unwrapped.horizon
        )
        env.close()
