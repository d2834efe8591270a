"""What the few-shot methods without an inner loop share: one model trained by Adam with a step-decayed rate.

Metric networks (prototypical, matching; :mod:`metarl.fewshot.methods`) and comparison networks (relation, Siamese;
:mod:`metarl.fewshot.comparison_methods`) differ in how they score an episode, not in how they are optimised or
checkpointed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import Config
from .problem import FewShotProblem


def step_lr(base: float, decay: float, every: int, iteration: int) -> float:
    """Step decay: ``base * decay ** (iteration // every)`` (constant when ``every`` is 0); a function of the
    iteration only, so a resumed run follows the same schedule without scheduler state."""
    return base * decay ** (iteration // every) if every > 0 else base


class AdamTrainedMethod:
    """The problem's model on ``device`` and Adam at ``fewshot.outer_lr``, decayed by ``outer_lr_decay`` every
    ``outer_lr_decay_every`` iterations; checkpoint state is the model's parameters and Adam's state."""

    def __init__(
        self, config: Config, problem: FewShotProblem, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> None:
        self.config, self.problem = config, problem
        self.model: nn.Module = problem.make_model().to(device=device, dtype=dtype)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.fewshot.outer_lr)

    def current_lr(self, iteration: int) -> float:
        fs = self.config.fewshot
        return step_lr(fs.outer_lr, fs.outer_lr_decay, fs.outer_lr_decay_every, iteration)

    def set_lr(self, iteration: int) -> float:
        """Put the scheduled rate of ``iteration`` into Adam; returns it."""
        lr = self.current_lr(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {n: p.detach().clone() for n, p in self.model.named_parameters()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
