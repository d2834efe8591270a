"""A learned inner update rule: the meta-learner LSTM of Ravi & Larochelle 2017 ("Optimization as a model for
few-shot learning").

The learner's parameters are the cell state of an LSTM that runs coordinate-wise (one shared set of weights for
every parameter entry), so one inner step is::

    theta_t = f_t * theta_{t-1} + i_t * (-grad_t)

a gradient step whose per-coordinate step size ``i_t`` and shrinkage ``f_t`` (forget gate) are produced by the
network from the current gradient, loss and parameter. As in the paper (sec. 3.3):

- two layers: a plain LSTM over the preprocessed gradient and loss, then the modified cell above, whose gates read
  the first layer's output, the current parameter and the gate's own previous value:
  ``f_t = sigmoid(W_F [h_t, theta_{t-1}, f_{t-1}] + b_F)``, ``i_t = sigmoid(W_I [h_t, theta_{t-1}, i_{t-1}] + b_I)``;
- inputs preprocessed as in Andrychowicz et al. 2016 (:func:`preprocess`, p = 10), which maps magnitudes spanning many
  orders onto a bounded range;
- the forget bias starts large (f close to 1: no shrinkage) and the input bias small (a small step size), so the
  untrained rule is close to plain SGD; the initial parameters ``theta_0`` (the model's) are meta-learned too;
- the gradient and loss inputs are treated as constants (the paper drops their second derivatives); the meta-gradient
  flows through the cell state, i.e. through every ``f_t`` and ``i_t``.

The state carried across steps of one adaptation is ``(h, c, f, i)`` per coordinate; :meth:`MetaLearnerLSTM.step` is
what :class:`metarl.learners.GradientLearner` calls for its ``"learned"`` inner rule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
LearnedState = dict[str, Tensor]
PREPROCESS_P = 10.0


def preprocess(x: Tensor, p: float = PREPROCESS_P) -> Tensor:
    """``[..., 2]``: ``(log|x| / p, sign x)`` where ``|x| >= e^-p``, else ``(-1, e^p x)`` (Andrychowicz et al. 2016)."""
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, torch.log(x.abs().clamp_min(math.exp(-p))) / p, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), math.exp(p) * x)
    return torch.stack([first, second], dim=-1)


class MetaLearnerLSTM(nn.Module):
    """The coordinate-wise two-layer meta-learner; ``hidden`` units in the first layer (paper: 20)."""

    def __init__(
        self,
        hidden: int = 20,
        forget_bias: tuple[float, float] = (4.0, 6.0),
        input_bias: tuple[float, float] = (-5.0, -4.0),
    ) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.lstm_in = nn.Linear(4, 4 * hidden)  # first layer: gates from the preprocessed gradient and loss ...
        self.lstm_hidden = nn.Linear(hidden, 4 * hidden, bias=False)  # ... and its previous output
        self.w_forget = nn.Parameter(torch.empty(hidden + 2))  # second layer: over [h, theta, f_prev]
        self.w_input = nn.Parameter(torch.empty(hidden + 2))  # over [h, theta, i_prev]
        self.b_forget = nn.Parameter(torch.empty(()))
        self.b_input = nn.Parameter(torch.empty(()))
        with torch.no_grad():
            self.w_forget.uniform_(-0.01, 0.01)
            self.w_input.uniform_(-0.01, 0.01)
            self.b_forget.uniform_(*forget_bias)
            self.b_input.uniform_(*input_bias)

    def init_state(self, params: Params) -> LearnedState:
        """Zero state for every coordinate of ``params`` (in their order)."""
        n = sum(p.numel() for p in params.values())
        ref = next(iter(params.values()))
        zeros = ref.new_zeros(n, self.hidden)
        return {"h": zeros, "c": zeros, "f": ref.new_zeros(n), "i": ref.new_zeros(n)}

    def step(
        self, params: Params, grads: Params, loss: Tensor, state: LearnedState | None
    ) -> tuple[Params, LearnedState]:
        """One learned update of ``params`` (all coordinates at once); returns the new params and state."""
        if state is None:
            state = self.init_state(params)
        theta = torch.cat([p.reshape(-1) for p in params.values()])
        grad = torch.cat([g.reshape(-1) for g in grads.values()]).detach()
        loss_in = preprocess(loss.detach().reshape(1)).expand(grad.shape[0], 2)
        x = torch.cat([preprocess(grad), loss_in], dim=-1)
        gates = self.lstm_in(x) + self.lstm_hidden(state["h"])
        i1, f1, g1, o1 = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f1) * state["c"] + torch.sigmoid(i1) * torch.tanh(g1)
        h = torch.sigmoid(o1) * torch.tanh(c)
        hid = self.hidden
        forget = torch.sigmoid(
            h @ self.w_forget[:hid] + theta * self.w_forget[hid] + state["f"] * self.w_forget[hid + 1] + self.b_forget
        )
        step = torch.sigmoid(
            h @ self.w_input[:hid] + theta * self.w_input[hid] + state["i"] * self.w_input[hid + 1] + self.b_input
        )
        new_theta = forget * theta - step * grad
        out, offset = {}, 0
        for name, p in params.items():
            out[name] = new_theta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return out, {"h": h, "c": c, "f": forget, "i": step}
