"""metarl plot --budget: MAML's gradient steps and RL^2/SNAIL's episodes on one axis of environment steps."""

import numpy as np
from test_plot import PNG_MAGIC, fake_run

from metarl.cli import main
from metarl.config import config_from_dict, dump_config
from metarl.eval_results import csv_name, merge_summary, summarize, summary_json
from metarl.plot_budget import budget_linthresh, budget_steps, run_horizon

TRIAL_AXIS = "episode of the trial (step k = episode k + 1)"


def fake_trial_run(folder, episodes_per_trial=4):
    """An RL^2 run folder on navigation with a per-episode evaluation of the agent and its untrained version."""
    folder.mkdir(parents=True)
    config = config_from_dict({"env": {"id": "metarl/Navigation2D-v0"}, "algorithm": "rl2"})
    (folder / "config.yaml").write_text(dump_config(config))
    rng = np.random.default_rng(1)
    summary = {}
    for method, start in (("rl2", -30.0), ("random", -45.0)):
        means = start + 5.0 * np.arange(episodes_per_trial) * (method == "rl2")
        returns = means[None, :] + rng.normal(0, 2, size=(10, episodes_per_trial))
        entry = {"seed": 0, "tasks": 10, "episodes": 3, "episodes_per_trial": episodes_per_trial, "axis": TRIAL_AXIS}
        entry.update(csv=csv_name(method), steps=summarize(returns))
        summary = merge_summary(summary, method, entry, config.env.id)
    (folder / "evaluation").mkdir()
    (folder / "evaluation" / "summary.json").write_text(summary_json(summary))
    return folder


def test_budget_counts_episodes_of_each_gradient_step_and_of_the_trial_so_far():
    gradient = {"episodes": 20, "steps": [{"step": k} for k in range(4)]}
    trial = {"episodes": 3, "axis": TRIAL_AXIS, "steps": [{"step": k} for k in range(5)]}
    oracle = {"episodes": 20, "steps": [{"step": 0}]}
    assert budget_steps(gradient, 100) == [0, 2000, 4000, 6000]
    assert budget_steps(trial, 100) == [0, 100, 200, 300, 400]  # trials per task do not add budget
    assert budget_steps(oracle, 200) == [0]


def test_budget_plot_of_a_maml_and_an_rl2_run(tmp_path, capsys):
    maml, rl2 = fake_run(tmp_path / "maml"), fake_trial_run(tmp_path / "rl2")
    assert run_horizon(maml) == run_horizon(rl2) == 100  # read from the runs' environment
    out = tmp_path / "budget.png"
    assert main(["plot", str(maml), str(rl2), "--budget", "-o", str(out), "--formats", "png,svg"]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    text = out.with_suffix(".svg").read_text()
    for label in ("environment steps spent on the task", "per gradient step (5 episodes each)", "per episode"):
        assert label in text
    assert "maml: MAML" in text and "rl2: RL^2" in text and "untrained agent" in text
    assert main(["plot", str(rl2), "--budget"]) == 0
    assert (rl2 / "evaluation" / "budget.png").is_file()
    capsys.readouterr()


def test_budget_and_training_together_is_one_line_exit_2(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    out = tmp_path / "x.png"
    assert main(["plot", str(run), "--budget", "--training", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--training and --budget" in err
    assert not out.exists()


def test_the_budget_axis_goes_symlog_only_when_budgets_span_a_decade():
    assert budget_linthresh([[0, 2000, 4000, 6000], [0, 100, 200, 300]]) == 100.0  # navigation: MAML beside RL^2
    assert budget_linthresh([[0, 2000, 4000, 6000]]) is None  # MAML alone: 3x, linear
    assert budget_linthresh([[0, 100, 200, 999]]) is None
    assert budget_linthresh([[0], [0]]) is None  # nothing adapted yet: no positive budget
