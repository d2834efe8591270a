"""RL^2: the trial agent's hidden state, log-probabilities recomputed at update time, PPO/GAE by hand, and the
algorithm run through ``metarl train`` / ``--resume`` / ``metarl evaluate``."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from cli_runs import interrupted_and_straight

from metarl.algorithms.rl2 import RL2
from metarl.algorithms.trial_ppo import return_variance
from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.models.gru import RL2Agent
from metarl.ppo import trial_gae
from metarl.recurrent import NO_ACTION
from metarl.sampling import make_sampler
from metarl_envs import Bandit, TabularMDP

BANDIT = "experiments/rl2_bandit_k5_n10.yaml"
TINY = [
    "sampler.backend=local",
    "rl2.tasks_per_iteration=4",
    "rl2.trials_per_task=2",
    "rl2.episodes_per_trial=3",
    "rl2.hidden_size=8",
    "rl2.minibatches=2",
    "rl2.epochs=2",
    "logging.checkpoint_every=2",
    "logging.tensorboard=false",
]


def sets(*assignments):
    return sum([["--set", a] for a in assignments], [])


def train(*args):
    return main(["train", *args, "--no-progress"])


def rows(run):
    with (run / "progress.csv").open(newline="") as handle:
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in csv.DictReader(handle)]


def tensors(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(tensors(value, f"{prefix}{key}."))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            out.update(tensors(value, f"{prefix}{i}."))
    elif torch.is_tensor(tree):
        out[prefix] = tree
    else:
        out[prefix] = tree
    return out


def same_checkpoints(a, b):
    ta, tb = tensors(load_checkpoint(a)["algorithm"]), tensors(load_checkpoint(b)["algorithm"])
    assert ta.keys() == tb.keys() and ta
    return all(torch.equal(ta[k], tb[k]) if torch.is_tensor(ta[k]) else ta[k] == tb[k] for k in ta)


def reference_log_probs(agent, batch, episodes_per_trial, carry_state=True):
    """Step-by-step replay of the sampler's convention with ``agent.forward``: inputs and state carried across the
    episodes of a trial (``carry_state=False``: the state restarts every episode, inputs still carried)."""
    b = batch.to_torch()
    num_tasks, num_episodes, horizon = b.rewards.shape
    out = torch.zeros(num_tasks, num_episodes, horizon)
    with torch.no_grad():
        for i in range(num_tasks):
            for e in range(num_episodes):
                if e % episodes_per_trial == 0:
                    state = agent.initial_state(1)
                    prev_a, prev_r, prev_d = torch.tensor([NO_ACTION]), torch.zeros(1), torch.zeros(1)
                elif not carry_state:
                    state = agent.initial_state(1)
                for t in range(horizon):
                    if b.mask[i, e, t] == 0:
                        break
                    dist, state = agent(b.observations[i, e, t][None], prev_a, prev_r, prev_d, state)
                    out[i, e, t] = agent.log_prob(dist, b.actions[i, e, t][None])[0]
                    ended = t == horizon - 1 or b.mask[i, e, t + 1] == 0
                    prev_a, prev_r = b.actions[i, e, t][None], b.rewards[i, e, t][None]
                    prev_d = torch.tensor([1.0 if ended else 0.0])
    return out


def test_hidden_state_carries_over_episodes_of_a_trial_and_restarts_between_trials():
    """TabularMDP, 2 trials of 3 episodes per task: the sampler's log-probabilities are those of a step-by-step
    replay that carries the state across episodes and restarts it at each trial; restarting it every episode
    instead gives other log-probabilities from the second episode on, and the same in the first."""
    torch.manual_seed(0)
    agent = RL2Agent(10, 5, True, hidden_size=16)
    tasks = TabularMDP.sample_tasks(2, np.random.default_rng(0), split="train")
    params = {k: v.detach() for k, v in agent.named_parameters()}
    with make_sampler("metarl/TabularMDP-v0", {"horizon": 4}, backend="local") as sampler:
        batch = sampler.sample(agent, params, tasks, 6, seed=5, episodes_per_trial=3)
    recorded = torch.as_tensor(batch.log_probs)
    carried = reference_log_probs(agent, batch, 3)
    torch.testing.assert_close(recorded, carried, rtol=0, atol=1e-6)
    restarted = reference_log_probs(agent, batch, 3, carry_state=False)
    first = [0, 3]  # first episode of each trial
    torch.testing.assert_close(recorded[:, first], restarted[:, first], rtol=0, atol=1e-6)
    later = [1, 2, 4, 5]
    assert (recorded[:, later] - restarted[:, later]).abs().amax() > 1e-3
    # Trials restart: trial 2 of a task starts exactly like a fresh trial would (same first observation, no inputs).
    fresh_dist, _ = agent(torch.as_tensor(batch.observations[:, 3, 0]), *no_inputs(2), agent.initial_state(2))
    torch.testing.assert_close(
        recorded[:, 3, 0], agent.log_prob(fresh_dist, torch.as_tensor(batch.actions[:, 3, 0])), rtol=0, atol=1e-6
    )


def no_inputs(n):
    return torch.full((n,), NO_ACTION), torch.zeros(n), torch.zeros(n)


def rl2_algorithm(env, **rl2):
    config = config_from_dict({"algorithm": "rl2", "env": {"id": env}, "rl2": {"hidden_size": 16, **rl2}})
    if env == "metarl/Bandit-v0":
        space = Bandit()
    elif env == "metarl/TabularMDP-v0":
        space = TabularMDP(horizon=4)
    else:
        import gymnasium as gym

        space = gym.make(env).unwrapped
    torch.manual_seed(1)
    return RL2(config, space.observation_space, space.action_space, torch.device("cpu")), space


@pytest.mark.parametrize(
    ("env", "kwargs", "backend"),
    [
        ("metarl/Bandit-v0", {}, "local"),
        ("metarl/TabularMDP-v0", {"horizon": 4}, "local"),
        ("metarl/Navigation2D-v0", {"horizon": 6}, "local"),
        ("metarl/TabularMDP-v0", {"horizon": 4}, "ray"),
    ],
)
def test_log_probs_recomputed_at_update_equal_the_sampled_ones(env, kwargs, backend):
    """What PPO's ratio starts from: the whole trials replayed from the initial state give back the log-probabilities
    the sampler recorded (discrete and Gaussian heads; in-process and Ray workers)."""
    algorithm, space = rl2_algorithm(env, episodes_per_trial=3)
    tasks = space.sample_tasks(3, np.random.default_rng(2), split="train")
    with make_sampler(env, kwargs, backend=backend, num_workers=1) as sampler:
        batch = algorithm.sample_trials(sampler, tasks, trials=2, seed=7)
    b = batch.to_torch()
    with torch.no_grad():
        log_probs, _, _ = algorithm.recompute(algorithm.lanes(b))
    recorded = b.log_probs.reshape(log_probs.shape)
    mask = b.mask.reshape(log_probs.shape)
    assert mask.sum() > 0
    torch.testing.assert_close(log_probs * mask, recorded * mask, rtol=0, atol=2e-5)


def test_recomputation_notices_a_wrong_input_convention():
    """The recomputation check can fail: replaying without the previous reward changes the log-probabilities."""
    algorithm, space = rl2_algorithm("metarl/Bandit-v0", episodes_per_trial=4)
    tasks = space.sample_tasks(4, np.random.default_rng(3), split="train")
    with make_sampler("metarl/Bandit-v0", {}, backend="local") as sampler:
        batch = algorithm.sample_trials(sampler, tasks, trials=1, seed=1)
    trials = algorithm.lanes(batch.to_torch())
    trials["rewards"] = torch.zeros_like(trials["rewards"])
    with torch.no_grad():
        log_probs, _, _ = algorithm.recompute(trials)
    recorded = trials["old_log_probs"].reshape(log_probs.shape)
    rewarded = (torch.as_tensor(batch.rewards).reshape(4, 4)[:, :-1] > 0).any()
    assert rewarded and (log_probs - recorded).abs().amax() > 1e-4


def test_unroll_backward_is_linear_in_the_trial_length():
    """The unroll's graph holds no per-step indexing node (``x[:, t]``): each one's backward writes a gradient of the
    whole sequence, which made RL^2's backward quadratic in the trial length (195 s for 5 Meta-World trials)."""
    agent = RL2Agent(obs_dim=3, action_dim=2, discrete=False, hidden_size=8)
    lanes, k, horizon = 2, 2, 5
    dist, values, _ = agent.unroll(
        torch.randn(lanes, k, horizon, 3),
        torch.randn(lanes, k, horizon, 2),
        torch.randn(lanes, k, horizon),
        torch.ones(lanes, k, horizon),
    )
    seen, stack, names = set(), [(dist[0].sum() + values.sum()).grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    assert "UnbindBackward0" in names
    assert not [name for name in names if name.startswith(("SelectBackward", "SliceBackward"))]


def test_ppo_update_improves_the_surrogate_and_moves_the_agent():
    algorithm, space = rl2_algorithm("metarl/Bandit-v0", episodes_per_trial=5, epochs=3, lr=1e-2)
    tasks = space.sample_tasks(8, np.random.default_rng(4), split="train")
    before = {k: v.clone() for k, v in algorithm.policy.state_dict().items()}
    with make_sampler("metarl/Bandit-v0", {}, backend="local") as sampler:
        batch = algorithm.sample_trials(sampler, tasks, trials=1, seed=3)
    metrics = algorithm.update(batch.to_torch(), seed=11)
    assert metrics["log_prob_gap"] < 1e-5 and metrics["approx_kl"] > 0
    assert any(not torch.equal(before[k], v) for k, v in algorithm.policy.state_dict().items())


def test_normalized_value_loss_is_the_raw_loss_over_the_return_variance():
    """``normalize_value_loss`` equals ``value_coef / Var(returns)`` on the raw loss (same update), and on navigation's
    large returns it is not the raw update."""
    kwargs = {"episodes_per_trial": 2, "epochs": 2, "minibatches": 2, "lr": 1e-2}
    normalized, space = rl2_algorithm("metarl/Navigation2D-v0", normalize_value_loss=True, **kwargs)
    tasks = space.sample_tasks(4, np.random.default_rng(2), split="train")
    with make_sampler("metarl/Navigation2D-v0", {"horizon": 6}, backend="local") as sampler:
        batch = normalized.sample_trials(sampler, tasks, trials=1, seed=5).to_torch()
    trials = normalized.lanes(batch)
    num = trials["rewards"].shape[0]
    rewards, mask = trials["rewards"].reshape(num, -1), trials["mask"].reshape(num, -1)
    with torch.no_grad():
        _, _, values = normalized.recompute(trials)
        _, returns = trial_gae(rewards, values, mask, normalized.config.advantages.gamma, 1.0)
    variance = return_variance(returns, mask)
    assert variance > 4.0  # navigation's returns: the two updates below must differ

    scaled, _ = rl2_algorithm("metarl/Navigation2D-v0", value_coef=0.5 / variance, **kwargs)
    raw, _ = rl2_algorithm("metarl/Navigation2D-v0", **kwargs)
    for algorithm in (normalized, scaled, raw):
        algorithm.config.advantages.gae_lambda = 1.0
        algorithm.update(batch, seed=7)
    a, b, c = (alg.policy.state_dict() for alg in (normalized, scaled, raw))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    assert any(not torch.allclose(a[k], c[k], rtol=1e-3, atol=1e-5) for k in a)


@pytest.mark.parametrize(
    ("config", "extra", "column"),
    [
        (BANDIT, TINY, "trial_return"),
        (
            "experiments/maml_trpo_navigation.yaml",
            ["sampler.backend=local", "maml.meta_batch_size=2", "maml.episodes_per_task=2", "policy.hidden_sizes=[8]"]
            + ["env.kwargs.horizon=5", "logging.tensorboard=false"],
            "return_post",
        ),
        (BANDIT, [*TINY, "env.id=metarl/TabularMDP-v0", "env.kwargs={horizon: 3}"], "trial_return"),
        (BANDIT, [*TINY, "env.id=metarl/Navigation2D-v0", "env.kwargs={horizon: 3}"], "trial_return"),
    ],
)
def test_each_algorithm_runs_one_iteration_through_metarl_train(
    tmp_path, repo_root, monkeypatch, config, extra, column
):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert train(config, "--run-dir", str(run), *sets("iterations=1", *extra)) == 0
    (row,) = rows(run)
    assert row["iteration"] == "1" and int(row["env_steps"]) > 0 and math.isfinite(float(row[column]))
    assert load_checkpoint(latest_checkpoint(run))["iteration"] == 1


def test_bad_algorithm_is_one_line_naming_the_valid_ones_exit_2(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    assert train(BANDIT, "--run-dir", str(tmp_path / "run"), *sets("algorithm=rl3")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config key 'algorithm'" in err
    assert "'maml_trpo'" in err and "'rl2'" in err
    assert not (tmp_path / "run").exists()


def test_interrupted_rl2_run_resumes_exactly(tmp_path, repo_root, monkeypatch, capsys):
    """SIGINT during iteration 3 (checkpoints every 2): iteration 3 finishes and is checkpointed; ``--resume`` then
    ends bit for bit where an uninterrupted 4-iteration run ends (agent, Adam state, progress rows)."""
    monkeypatch.chdir(repo_root)
    straight, stopped = interrupted_and_straight(BANDIT, TINY, tmp_path, monkeypatch)
    assert rows(straight) == rows(stopped) and len(rows(stopped)) == 4
    assert same_checkpoints(latest_checkpoint(straight), latest_checkpoint(stopped))
    assert "optimizer" in load_checkpoint(latest_checkpoint(stopped))["algorithm"]


def test_evaluate_an_rl2_run_per_episode_of_the_trial(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert train(BANDIT, "--run-dir", str(run), *sets("iterations=2", *TINY)) == 0
    base = ["evaluate", str(run), "--tasks", "6", "--episodes", "4", "--backend", "local"]
    assert main(base) == 0
    for baseline in ("random", "ucb1", "thompson", "best_arm"):
        assert main([*base, "--baseline", baseline]) == 0
    out = capsys.readouterr().out
    assert "trial return" in out
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    assert list(summary["methods"]) == ["random", "rl2", "ucb1", "thompson", "best_arm"]
    entry = summary["methods"]["rl2"]
    assert entry["iteration"] == 2 and entry["episodes_per_trial"] == 3 and len(entry["steps"]) == 3
    per_episode = np.array([[float(r["return"]) for r in rows_of(run, "rl2") if r["task"] == str(i)] for i in range(6)])
    assert per_episode.shape == (6, 3)
    assert math.isclose(entry["trial"]["mean"], per_episode.sum(1).mean(), rel_tol=1e-9)
    assert entry["trial"]["ci95_low"] < entry["trial"]["mean"] < entry["trial"]["ci95_high"]
    # The same held-out tasks for every method; the agent's numbers are deterministic.
    assert [r["means_0"] for r in rows_of(run, "rl2")] == [r["means_0"] for r in rows_of(run, "ucb1")]
    first = (run / "evaluation" / "adaptation_rl2.csv").read_text()
    assert main(base) == 0 and (run / "evaluation" / "adaptation_rl2.csv").read_text() == first
    assert main(["plot", str(run), "-o", str(tmp_path / "trial.png")]) == 0
    assert main(["plot", str(run), "--training", "-o", str(tmp_path / "training.png")]) == 0
    assert (tmp_path / "trial.png").stat().st_size > 0 and (tmp_path / "training.png").stat().st_size > 0
    assert main([*base, "--checkpoint", "best"]) == 0  # scored by the training trial_return
    entry = json.loads((run / "evaluation" / "summary.json").read_text())["methods"]["rl2"]
    assert entry["checkpoint_rule"] == "best mean training trial_return since the previous checkpoint"


def test_evaluate_refuses_gradient_steps_and_bandit_baselines_elsewhere(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    mdp = [*TINY, "env.id=metarl/TabularMDP-v0", "env.kwargs={horizon: 3}"]
    assert train(BANDIT, "--run-dir", str(run), *sets("iterations=1", *mdp)) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--steps", "2", "--backend", "local"]) == 2
    assert main(["evaluate", str(run), "--baseline", "ucb1", "--backend", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "gradient steps" in err[0] and "Bernoulli bandits" in err[1]
    assert main(["evaluate", str(run), "--baseline", "mdp_optimal", "--tasks", "3"]) == 0
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    assert summary["methods"]["mdp_optimal"]["trial"]["mean"] > 0


def rows_of(run, method):
    with (run / "evaluation" / f"adaptation_{method}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_rl2_experiment_loads_and_builds(repo_root):
    import importlib.util

    from metarl.algorithms import build_algorithm
    from metarl.config import load_config
    from metarl.train import make_env
    from metarl_envs import EXTRA_FAMILIES

    paths = sorted((repo_root / "experiments").glob("rl2_*.yaml"))
    assert len(paths) >= 5
    have_metaworld = importlib.util.find_spec("metaworld") is not None
    for path in paths:
        config = load_config(path)
        if config.env.id in EXTRA_FAMILIES and not have_metaworld:
            continue  # the Meta-World config builds where the extra is installed (tests/test_meta_world.py)
        env = make_env(config)
        algorithm = build_algorithm(config, env, torch.device("cpu"))
        assert algorithm.name == "rl2" and algorithm.policy.hidden_size == 256
        env.close()


def test_tabular_references_by_hand():
    """Two states, two actions, horizon 2, start in state 0. mu = [[1, 0], [0, 3]]; action 0 stays, action 1 moves
    to the other state. Optimal: move (0), then stay in 1 (3): 3. Uniform: step 1 from s0 = 0.5, then from s0 0.5 or
    s1 1.5 with prob 1/2 each: 0.5 + 1.0 = 1.5."""
    from metarl.tabular_baselines import tabular_returns

    task = {"transitions": [[[1, 0], [0, 1]], [[0, 1], [1, 0]]], "reward_means": [[1, 0], [0, 3]]}
    np.testing.assert_allclose(tabular_returns("mdp_optimal", [task], 2, 3), [[3.0, 3.0, 3.0]])
    np.testing.assert_allclose(tabular_returns("uniform", [task], 2, 1), [[1.5]])


def test_bandit_baselines_behave_as_specified():
    from metarl.bandit_baselines import bandit_returns

    tasks = [{"means": [0.0, 0.0, 1.0]}, {"means": [1.0, 0.0, 0.0]}]
    np.testing.assert_array_equal(bandit_returns("best_arm", tasks, 5, 3, [0, 1]), np.ones((2, 5)))
    ucb = bandit_returns("ucb1", tasks, 6, 4, [0, 1])
    # UCB1 tries every arm once (in index order) before anything else; then it exploits the deterministic best arm.
    np.testing.assert_array_equal(ucb[0, :3], [0, 0, 1])
    np.testing.assert_array_equal(ucb[1, :3], [1, 0, 0])
    assert ucb[:, 3:].min() == 1.0
    thompson = bandit_returns("thompson", [{"means": [0.1, 0.9]}], 50, 200, [3])
    assert thompson[0, -10:].mean() > thompson[0, :3].mean() + 0.2
