"""Training curves of few-shot runs (``progress.csv``): training loss and validation metric vs meta-iteration.

``metarl plot RUN`` draws the adaptation curve (metric vs gradient steps) from ``evaluation/summary.json``, which
few-shot runs share with meta-RL runs. Their ``progress.csv`` has other columns than a meta-RL run's
(``loss``, ``accuracy`` or ``mse``, ``val_<metric>_pre``, ``val_<metric>``), drawn here. Headless (Agg canvas).

``python -m metarl.fewshot.figures -o FIGURE.png RUN...``
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..run_dir import read_progress

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _metric(rows: list[dict[str, float]]) -> str:
    return "accuracy" if any("accuracy" in r for r in rows) else "mse"


def training_figure(runs: Sequence[str | Path], window: int = 50) -> Figure:
    """Left: training loss (moving average over ``window`` iterations); right: validation metric before and after
    adaptation (one line for methods that do not adapt by gradient steps). One colour per run."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    metric = "value"
    any_adapts = False
    for run in map(Path, runs):
        rows = read_progress(run)
        metric = _metric(rows)
        its = np.array([r["iteration"] for r in rows])
        loss = np.array([r["loss"] for r in rows])
        w = max(1, min(window, len(loss)))
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        (line,) = left.plot(its[w - 1 :], smooth, label=run.name)
        val = [r for r in rows if f"val_{metric}" in r]
        xs = [r["iteration"] for r in val]
        after = [r[f"val_{metric}"] for r in val]
        before = [r.get(f"val_{metric}_pre", a) for r, a in zip(val, after, strict=True)]
        # Metric methods (ProtoNets, MatchingNets) take no gradient steps: before == after, so one unlabelled line.
        adapts = any(b != a for b, a in zip(before, after, strict=True))
        any_adapts |= adapts
        label = f"{run.name}: after" if adapts else run.name
        right.plot(xs, after, "-o", color=line.get_color(), ms=3, label=label)
        if adapts:
            right.plot(xs, before, ":", color=line.get_color(), label=f"{run.name}: before")
    left.set_xlabel("meta-iteration")
    left.set_ylabel(f"training loss (moving average, {window})")
    right.set_xlabel("meta-iteration")
    right.set_ylabel(f"validation {metric}" + (" (dotted: before adaptation)" if any_adapts else ""))
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def plot_training(runs: Sequence[str | Path], output: str | Path, window: int = 50) -> Path:
    """Draw :func:`training_figure` into ``output`` (format from its suffix) and return its path."""
    fig = training_figure(runs, window)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120, bbox_inches="tight", metadata={"Date": None} if output.suffix == ".svg" else None)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metarl.fewshot.figures", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("-o", "--output", required=True, help="figure file (.png / .svg)")
    parser.add_argument("--window", type=int, default=50, help="moving-average window of the training loss")
    args = parser.parse_args(argv)
    print(f"wrote {plot_training(args.runs, args.output, args.window)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
