"""Progress reporting for long loops: a tqdm bar with the latest metrics, or one log line per step."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

SHOWN = {
    "env_steps": "steps",
    "return_pre": "pre",
    "return_post": "post",
    "success_post": "success",
    "trial_return": "trial",
    "accuracy": "acc",
    "loss": "loss",
}


def _format(row: dict[str, Any]) -> dict[str, str]:
    shown = {}
    for key, label in SHOWN.items():
        if key in row:
            value = row[key]
            shown[label] = f"{int(value):,}" if key == "env_steps" else f"{value:.3g}"
    return shown


class ProgressBar:
    """``update(row)`` advances by one step and shows the row's headline metrics."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", enabled: bool = True) -> None:
        self.enabled = enabled
        self.total, self.count, self.desc = total, initial, desc
        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True) if enabled else None

    def update(self, row: dict[str, Any]) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix(_format(row), refresh=False)
            self.bar.update(1)
        else:
            metrics = " ".join(f"{k}={v}" for k, v in _format(row).items())
            print(f"{self.desc} {self.count}/{self.total} {metrics}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_bar(total: int, initial: int = 0, desc: str = "", enabled: bool = True) -> ProgressBar:
    return ProgressBar(total, initial, desc, enabled)
