"""metarl evaluate: adaptation curves on held-out tasks, statistics, determinism, baselines and user errors."""

import csv
import json
import math
import shutil
from functools import partial

import numpy as np
import pytest
import torch

from metarl.advantages import compute_advantages
from metarl.cli import main
from metarl.config import ConfigError
from metarl.eval_results import confidence_interval, current_umask, summarize
from metarl.evaluate import adapt_step, fresh_policy, make_algorithm, parse_step_sizes
from metarl.rl_objectives import reinforce_loss
from metarl.run_dir import read_run_config
from metarl_envs import Navigation2D

TINY = """\
seed: 3
iterations: 1
env: {id: metarl/Navigation2D-v0, kwargs: {horizon: 5}}
sampler: {backend: local, num_workers: 1}
policy: {hidden_sizes: [8], activation: tanh, init_std: 0.5}
maml: {meta_batch_size: 2, episodes_per_task: 2, fast_lr: 0.5}
logging: {checkpoint_every: 1, tensorboard: false}
"""
LOCAL = ["--backend", "local", "--workers", "1"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-iteration Navigation2D run (seconds), trained through the real training loop."""
    from metarl.train import train_from_cli

    root = tmp_path_factory.mktemp("evaluate")
    (root / "tiny.yaml").write_text(TINY)
    return train_from_cli(str(root / "tiny.yaml"), str(root / "run"), None, [], progress=False)


@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the trained run, so each test writes its own evaluation folder."""
    return shutil.copytree(trained_run, tmp_path / "run")


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def evaluate(run, *extra):
    return main(["evaluate", str(run), "--tasks", "3", "--steps", "2", "--episodes", "2", *LOCAL, *extra])


def test_confidence_interval_matches_a_hand_computation():
    mean, std, half = confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    t_975_4 = 2.7764451051977987  # Student-t quantile, 4 degrees of freedom (tables: 2.776)
    assert mean == 3.0 and std == pytest.approx(math.sqrt(2.5), rel=1e-12)
    assert half == pytest.approx(t_975_4 * math.sqrt(2.5) / math.sqrt(5), rel=1e-12)
    rows = summarize(np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 10.0], [5.0, 10.0]]))
    assert rows[0]["ci95_low"] == pytest.approx(3.0 - half) and rows[0]["n"] == 5
    assert rows[1]["std"] == 0.0 and rows[1]["ci95"] == 0.0
    assert math.isnan(confidence_interval([4.0])[2])


def test_step_sizes():
    assert parse_step_sizes(None, 0.1, None) == [0.1, 0.1, 0.1]
    assert parse_step_sizes("paper", 0.1, 4) == [0.1, 0.05, 0.05, 0.05]
    assert parse_step_sizes("paper", 0.1, 0) == []
    assert parse_step_sizes("0.2,0.1", 0.1, None) == [0.2, 0.1]
    for spec, steps in (("0.2,0.1", 3), ("fast", None), ("-1", None)):
        with pytest.raises(ConfigError):
            parse_step_sizes(spec, 0.1, steps)


def test_adapt_step_is_the_training_inner_step(trained_run):
    """One evaluation step = params - lr * grad of the REINFORCE loss with the training advantages."""
    config = read_run_config(trained_run)
    torch.manual_seed(0)
    algorithm = make_algorithm(fresh_policy(config), config)
    generator = np.random.default_rng(0)
    n, e, t = 2, 3, 5
    from metarl.episodes import EpisodeBatch

    batch = EpisodeBatch(
        observations=generator.normal(size=(n, e, t, 2)).astype(np.float32),
        actions=generator.normal(size=(n, e, t, 2)).astype(np.float32),
        rewards=generator.normal(size=(n, e, t)).astype(np.float32),
        log_probs=np.zeros((n, e, t), np.float32),
        mask=np.ones((n, e, t), np.float32),
    )
    base = {k: v.detach().clone() for k, v in algorithm.policy.named_parameters()}
    adapted = adapt_step(algorithm, batch, [base, base], 0.3)
    tensors = batch.to_torch()
    adv = compute_advantages(tensors.observations, tensors.rewards, tensors.mask, 0.99, 1.0, True)
    loss = partial(reinforce_loss, algorithm.policy)
    for i in range(n):
        leaves = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        task = {"observations": tensors.observations[i], "actions": tensors.actions[i], "mask": tensors.mask[i]}
        grads = torch.autograd.grad(loss(leaves, {**task, "advantages": adv[i]}), list(leaves.values()))
        for (name, p), g in zip(base.items(), grads, strict=True):
            torch.testing.assert_close(adapted[i][name], p - 0.3 * g)
    assert not torch.equal(adapted[0]["log_std"], adapted[1]["log_std"])  # per-task adaptation


def test_evaluation_writes_rows_columns_and_summary(run, capsys):
    assert evaluate(run) == 0
    out = capsys.readouterr().out
    assert "maml" in out and "95% CI" in out
    rows = read_csv(run / "evaluation" / "adaptation.csv")
    mode = (run / "evaluation" / "adaptation.csv").stat().st_mode & 0o777
    assert mode == 0o666 & ~current_umask()  # not mkstemp's private 0600
    assert list(rows[0]) == ["method", "task", "step", "return", "goal_x", "goal_y"]
    assert [(r["task"], r["step"]) for r in rows] == [(str(i), str(k)) for i in range(3) for k in range(3)]
    assert {r["method"] for r in rows} == {"maml"}
    goals = Navigation2D.sample_tasks(3, np.random.default_rng(0), split="test")
    assert [[float(r["goal_x"]), float(r["goal_y"])] for r in rows[::3]] == [g["goal"] for g in goals]
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    entry = summary["methods"]["maml"]
    assert entry["step_sizes"] == [0.5, 0.5] and entry["iteration"] == 1 and entry["tasks"] == 3
    for k, stats in enumerate(entry["steps"]):
        returns = [float(r["return"]) for r in rows if r["step"] == str(k)]
        assert stats["step"] == k and stats["n"] == 3
        assert stats["mean"] == pytest.approx(np.mean(returns))
        assert stats["ci95"] == pytest.approx(confidence_interval(returns)[2])
    assert all(-5.0 <= float(r["return"]) <= 0.0 for r in rows)  # 5 steps of minus a distance below 1


def test_same_seed_same_evaluation(run):
    assert evaluate(run, "--step-sizes", "paper") == 0
    first = (run / "evaluation" / "adaptation.csv").read_bytes()
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    assert summary["methods"]["maml"]["step_sizes"] == [0.5, 0.25]
    assert evaluate(run, "--step-sizes", "paper") == 0
    assert (run / "evaluation" / "adaptation.csv").read_bytes() == first
    assert evaluate(run, "--step-sizes", "paper", "--seed", "1") == 0
    assert (run / "evaluation" / "adaptation.csv").read_bytes() != first


def test_baselines_share_tasks_and_merge_into_the_summary(run, capsys):
    from metarl.sb3_baselines import train_baseline

    assert evaluate(run) == 0
    assert evaluate(run, "--baseline", "random") == 0
    train_baseline(str(run), "pretrained", timesteps=64, progress=False)
    train_baseline(str(run), "oracle", timesteps=64, progress=False)
    assert evaluate(run, "--baseline", "pretrained") == 0
    assert evaluate(run, "--baseline", "oracle") == 0
    folder = run / "evaluation"
    maml = read_csv(folder / "adaptation.csv")
    for method in ("random", "pretrained", "oracle"):
        rows = read_csv(folder / f"adaptation_{method}.csv")
        assert {r["method"] for r in rows} == {method}
        steps = {r["step"] for r in rows}
        assert steps == ({"0"} if method == "oracle" else {"0", "1", "2"})
        assert [r["goal_x"] for r in rows if r["step"] == "0"] == [r["goal_x"] for r in maml if r["step"] == "0"]
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary["methods"]) == ["maml", "random", "pretrained", "oracle"]
    assert summary["env_id"] == "metarl/Navigation2D-v0" and "Student-t" in summary["confidence_interval"]
    oracle = (folder / "adaptation_oracle.csv").read_bytes()
    assert evaluate(run, "--baseline", "oracle") == 0
    assert (folder / "adaptation_oracle.csv").read_bytes() == oracle  # seeded per task and episode
    capsys.readouterr()
    assert main(["plot", str(run), "-o", str(run / "fig.png")]) == 0
    assert (run / "fig.png").stat().st_size > 0


def one_line_error(capsys, text):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metarl evaluate: error:") and text in err, err


def test_bad_input_is_a_one_line_error(run, tmp_path, capsys):
    assert evaluate(tmp_path / "nowhere") == 2
    one_line_error(capsys, "does not exist")

    assert evaluate(run, "--checkpoint", "7") == 2
    one_line_error(capsys, "iter_000007.pt' does not exist")

    checkpoint = next((run / "checkpoints").glob("iter_*.pt"))
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert evaluate(run) == 2
    one_line_error(capsys, "corrupt or not a metarl checkpoint")

    checkpoint.unlink()
    assert evaluate(run) == 2
    one_line_error(capsys, "has no checkpoint")

    assert evaluate(run, "--baseline", "pretrained") == 2
    one_line_error(capsys, "no pretrained baseline")

    assert evaluate(run, "--step-sizes", "0.1,0.2,0.3") == 2
    one_line_error(capsys, "--step-sizes gives 3 step sizes but --steps is 2")
    assert not (run / "evaluation").exists()  # nothing half-written


def test_best_checkpoint_is_chosen_by_training_returns_only(tmp_path):
    """The MAML paper's rule: each checkpoint scored by the mean training return_post since the previous one."""
    from metarl.evaluate import EvaluationError, find_checkpoint

    (tmp_path / "checkpoints").mkdir()
    for iteration in (2, 4, 6):
        (tmp_path / "checkpoints" / f"iter_{iteration:06d}.pt").write_bytes(b"")
    with pytest.raises(EvaluationError, match="progress.csv"):
        find_checkpoint(tmp_path, "best")
    returns = {1: -10.0, 2: -8.0, 3: -1.0, 4: -9.0, 5: -5.0, 6: -5.0}  # windows: -9, -5, -5 (tie: the earlier)
    lines = ["iteration,return_pre,return_post"] + [f"{i},-40,{r}" for i, r in returns.items()]
    (tmp_path / "progress.csv").write_text("\n".join(lines) + "\n")
    assert find_checkpoint(tmp_path, "best").name == "iter_000004.pt"
    returns[6] = -4.0
    lines = ["iteration,return_pre,return_post"] + [f"{i},-40,{r}" for i, r in returns.items()]
    (tmp_path / "progress.csv").write_text("\n".join(lines) + "\n")
    assert find_checkpoint(tmp_path, "best").name == "iter_000006.pt"
    assert find_checkpoint(tmp_path, None).name == "iter_000006.pt"


def test_best_checkpoint_of_a_trial_agent_uses_the_trial_return(tmp_path):
    """RL^2 / SNAIL runs log no return_post: ``best`` scores their training trial_return the same way."""
    from metarl.evaluate import EvaluationError, find_checkpoint

    (tmp_path / "checkpoints").mkdir()
    for iteration in (2, 4):
        (tmp_path / "checkpoints" / f"iter_{iteration:06d}.pt").write_bytes(b"")
    (tmp_path / "progress.csv").write_text("iteration,entropy\n1,1.0\n2,1.0\n")
    with pytest.raises(EvaluationError, match="return_post or trial_return"):
        find_checkpoint(tmp_path, "best")
    lines = ["iteration,trial_return,entropy"] + [f"{i},{r},1.0" for i, r in ((1, -30), (2, -10), (3, -40), (4, -20))]
    (tmp_path / "progress.csv").write_text("\n".join(lines) + "\n")  # windows: -20, -30
    assert find_checkpoint(tmp_path, "best").name == "iter_000002.pt"
    assert find_checkpoint(tmp_path, None).name == "iter_000004.pt"
