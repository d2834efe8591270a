"""metarl plot: adaptation and training figures as PNG/SVG, and one-line errors for run folders lacking data."""

import csv

import numpy as np
import pytest

from metarl.cli import main
from metarl.config import config_from_dict, dump_config
from metarl.eval_results import csv_name, merge_summary, summarize, summary_json
from metarl.plot import output_paths

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(folder, evaluated=True, progress=True):
    """A run folder with a config, an evaluation of MAML + two baselines and a progress.csv (no training needed)."""
    folder.mkdir(parents=True)
    config = config_from_dict({"env": {"id": "metarl/Navigation2D-v0"}})
    (folder / "config.yaml").write_text(dump_config(config))
    rng = np.random.default_rng(0)
    if evaluated:
        summary = {}
        curves = {"maml": [-40, -20, -15, -14], "random": [-45, -42, -40, -39], "oracle": [-8]}
        for method, means in curves.items():
            returns = np.asarray(means)[None, :] + rng.normal(0, 3, size=(10, len(means)))
            entry = {"seed": 0, "tasks": 10, "episodes": 5, "csv": csv_name(method), "steps": summarize(returns)}
            summary = merge_summary(summary, method, entry, config.env.id)
        (folder / "evaluation").mkdir()
        (folder / "evaluation" / "summary.json").write_text(summary_json(summary))
    if progress:
        with (folder / "progress.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["iteration", "env_steps", "return_pre", "return_post"])
            for i in range(1, 21):
                writer.writerow([i, i * 4000, -40 + i, -35 + 1.2 * i])
    return folder


def test_adaptation_plot_png_and_svg(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    out = tmp_path / "figs" / "adapt.png"
    assert main(["plot", str(run), "-o", str(out), "--formats", "png,svg"]) == 0
    png, svg = out, out.with_suffix(".svg")
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 10_000
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for label in ("MAML", "oracle", "number of gradient steps", "Navigation2D-v0", "return after fast adaptation"):
        assert label in text  # svg keeps text as glyph comments / ids; titles and labels appear verbatim
    assert "wrote" in capsys.readouterr().out


def test_plot_default_output_and_several_runs(tmp_path):
    first, second = fake_run(tmp_path / "a"), fake_run(tmp_path / "b")
    assert main(["plot", str(first), str(second), "--methods", "maml,oracle"]) == 0
    assert (first / "evaluation" / "adaptation.png").stat().st_size > 0
    svg = tmp_path / "both.svg"
    assert main(["plot", str(first), str(second), "-o", str(svg)]) == 0
    assert "a: MAML" in svg.read_text() and "b: MAML" in svg.read_text()


def test_training_plot(tmp_path):
    run = fake_run(tmp_path / "run", evaluated=False)
    out = tmp_path / "train.svg"
    assert main(["plot", str(run), "--training", "-o", str(out)]) == 0
    text = out.read_text()
    assert "environment steps" in text and "meta-iteration" in text and "after adaptation" in text


@pytest.mark.parametrize(
    "argv_tail, evaluated, progress, message",
    [
        ([], False, True, "has no evaluation results"),
        (["--training"], True, False, "has no training progress"),
    ],
)
def test_missing_data_is_a_one_line_error(tmp_path, capsys, argv_tail, evaluated, progress, message):
    run = fake_run(tmp_path / "run", evaluated=evaluated, progress=progress)
    out = tmp_path / "x.png"
    assert main(["plot", str(run), "-o", str(out), *argv_tail]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("metarl plot: error:")
    assert not out.exists()


def test_bad_run_folder_and_format(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing"), "-o", str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = fake_run(tmp_path / "run")
    assert main(["plot", str(run), "-o", str(tmp_path / "x.jpg")]) == 2
    assert "plot format must be one of" in capsys.readouterr().err
    assert main(["plot", str(run), "--methods", "pretrained", "-o", str(tmp_path / "x.png")]) == 2
    assert "none of the methods pretrained" in capsys.readouterr().err
    (run / "evaluation" / "summary.json").write_text("{not json")
    assert main(["plot", str(run), "-o", str(tmp_path / "x.png")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_output_paths():
    assert [p.name for p in output_paths("fig.png", None)] == ["fig.png"]
    assert [p.name for p in output_paths("fig.png", "svg, png")] == ["fig.svg", "fig.png"]
    assert [p.name for p in output_paths("out/fig", "pdf")] == ["fig.pdf"]


def test_training_plot_of_a_non_numeric_progress_value_is_one_line(tmp_path, capsys):
    run = fake_run(tmp_path / "run", evaluated=False)
    lines = (run / "progress.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",n/a"  # iteration 3's return_post
    (run / "progress.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "train.png"
    assert main(["plot", str(run), "--training", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metarl plot: error:"), err
    assert "progress.csv" in err and "line 4" in err and "'n/a'" in err and "'return_post'" in err
    assert not out.exists()
