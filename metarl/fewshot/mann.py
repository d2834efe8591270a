"""Memory-augmented neural network (Santoro et al. 2016, "One-shot learning with memory-augmented neural networks").

An LSTM controller with an external memory ``M`` (``slots x width``), read by content and written by
least-recently-used access (the paper's sec. 3.2). At step ``t`` the controller gets ``[x_t, y_{t-1}, r_{t-1}]``
(the image, the one-hot label of the *previous* step, the previous reads) and emits, per head ``h``, a key
``k_{t,h}`` (tanh) and a write gate logit ``alpha_{t,h}``. Then, in this order:

1. least used: ``w^lu_{t-1}(i) = 1`` for the ``n`` slots with the smallest usage ``w^u_{t-1}`` (``n`` = number of
   read heads; ties go to the lower index), else 0; the slot of smallest usage is erased (set to zero) before writing;
2. write weights: ``w^w_{t,h} = sigmoid(alpha_{t,h}) w^r_{t-1,h} + (1 - sigmoid(alpha_{t,h})) w^lu_{t-1}``;
3. write: ``M_t(i) = M_{t-1}(i) + sum_h w^w_{t,h}(i) k_{t,h}``;
4. read: ``w^r_{t,h} = softmax_i cos(k_{t,h}, M_t(i))``, ``r_{t,h} = sum_i w^r_{t,h}(i) M_t(i)``;
5. usage: ``w^u_t = gamma w^u_{t-1} + sum_h (w^r_{t,h} + w^w_{t,h})``.

The output is a linear map of ``[h_t, r_t]`` to ``n_way`` logits. Start of a sequence: ``M_0 = 1e-6`` everywhere
(cosine similarity needs non-zero rows), zero reads, read weights, usage and LSTM state. Images are average-pooled
to ``input_size`` x ``input_size`` (the paper: 20x20) and flattened. The memory functions are pure (tensors in,
tensors out) so the tests can check them against a hand-worked case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .comparison import one_hot

MEMORY_INIT = 1e-6
"""Every memory entry at the start of a sequence."""


@dataclass
class MemoryState:
    """The memory of a batch: ``memory [B, slots, width]``, ``usage [B, slots]``, ``read_weights [B, heads, slots]``
    and ``reads [B, heads, width]`` (the last step's read vectors)."""

    memory: Tensor
    usage: Tensor
    read_weights: Tensor
    reads: Tensor

    def expand(self, n: int) -> MemoryState:
        """The state of batch row 0 repeated ``n`` times (continuations of one sequence)."""
        return MemoryState(
            *(t[:1].expand(n, *t.shape[1:]) for t in (self.memory, self.usage, self.read_weights, self.reads))
        )


def least_used(usage: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``(w_lu [B, slots], erase [B, slots])``: ones at the ``n`` least-used slots (ties: lower index first), and a
    one-hot of the single least-used slot (the one erased before writing)."""
    order = torch.argsort(usage, dim=-1, stable=True)
    w_lu = torch.zeros_like(usage).scatter_(-1, order[..., :n], 1.0)
    erase = torch.zeros_like(usage).scatter_(-1, order[..., :1], 1.0)
    return w_lu, erase


def write_weights(prev_read_weights: Tensor, w_lu: Tensor, gate_logits: Tensor) -> Tensor:
    """``[B, heads, slots]``: ``sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}`` per head
    (``gate_logits [B, heads]``)."""
    gate = torch.sigmoid(gate_logits)[..., None]
    return gate * prev_read_weights + (1.0 - gate) * w_lu[:, None, :]


def read_weights(keys: Tensor, memory: Tensor) -> Tensor:
    """``[B, heads, slots]``: softmax over slots of the cosine similarity of each key ``[B, heads, width]`` with each
    memory row ``[B, slots, width]``."""
    cosine = F.normalize(keys, dim=-1, eps=1e-8) @ F.normalize(memory, dim=-1, eps=1e-8).transpose(1, 2)
    return torch.softmax(cosine, dim=-1)


def memory_step(state: MemoryState, keys: Tensor, gate_logits: Tensor, gamma: float) -> MemoryState:
    """One LRU write then content read (steps 1-5 of the module docstring); ``keys [B, heads, width]``."""
    w_lu, erase = least_used(state.usage, keys.shape[1])
    w_write = write_weights(state.read_weights, w_lu, gate_logits)
    memory = state.memory * (1.0 - erase[..., None]) + w_write.transpose(1, 2) @ keys
    w_read = read_weights(keys, memory)
    usage = gamma * state.usage + w_read.sum(1) + w_write.sum(1)
    return MemoryState(memory, usage, w_read, w_read @ memory)


def shifted_labels(labels: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """``[B, T] -> [B, T, n_way]``: step ``t`` holds the one-hot label of step ``t - 1`` (zeros at ``t = 0``), so a
    label reaches the model only after its example was classified."""
    onehot = one_hot(labels.reshape(-1), n_way, dtype).view(*labels.shape, n_way)
    return F.pad(onehot, (0, 0, 1, 0))[:, :-1]


class MANN(nn.Module):
    """LSTM controller + LRU memory (see the module docstring); ``forward`` maps sequences to per-step logits."""

    def __init__(
        self,
        n_way: int,
        hidden: int = 200,
        slots: int = 128,
        width: int = 40,
        heads: int = 4,
        gamma: float = 0.95,
        input_size: int = 20,
    ) -> None:
        super().__init__()
        if heads > slots:
            raise ValueError(f"MANN needs at least as many memory slots as read heads, got {slots} < {heads}")
        self.n_way, self.slots, self.width, self.heads, self.gamma = n_way, slots, width, heads, gamma
        self.input_size = input_size
        self.controller = nn.LSTMCell(input_size * input_size + n_way + heads * width, hidden)
        self.keys = nn.Linear(hidden, heads * width)
        self.gates = nn.Linear(hidden, heads)
        self.output = nn.Linear(hidden + heads * width, n_way)

    def initial_state(self, batch: int, like: Tensor) -> tuple[tuple[Tensor, Tensor], MemoryState]:
        """Zero LSTM state and the empty memory (``MEMORY_INIT``) for ``batch`` sequences."""
        zeros = like.new_zeros
        lstm = (zeros(batch, self.controller.hidden_size), zeros(batch, self.controller.hidden_size))
        memory = MemoryState(
            like.new_full((batch, self.slots, self.width), MEMORY_INIT),
            zeros(batch, self.slots),
            zeros(batch, self.heads, self.slots),
            zeros(batch, self.heads, self.width),
        )
        return lstm, memory

    def images(self, x: Tensor) -> Tensor:
        """``[B, T, 1, S, S] -> [B, T, input_size**2]``: average-pooled to the controller's resolution, flattened."""
        b, t = x.shape[:2]
        pooled = F.adaptive_avg_pool2d(x.reshape(b * t, *x.shape[2:]), self.input_size)
        return pooled.reshape(b, t, -1)

    def step(self, x: Tensor, prev_label: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """One step: ``x [B, input_size**2]``, ``prev_label [B, n_way]`` -> ``(logits [B, n_way], state)``."""
        (h, c), memory = state
        h, c = self.controller(torch.cat([x, prev_label, memory.reads.flatten(1)], dim=-1), (h, c))
        keys = torch.tanh(self.keys(h)).view(-1, self.heads, self.width)
        memory = memory_step(memory, keys, self.gates(h), self.gamma)
        return self.output(torch.cat([h, memory.reads.flatten(1)], dim=-1)), ((h, c), memory)

    def run(self, x: Tensor, prev_labels: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """``x [B, T, input_size**2]``, ``prev_labels [B, T, n_way]`` -> ``(logits [B, T, n_way], final state)``."""
        state = self.initial_state(x.shape[0], x) if state is None else state
        logits = []
        # unbind, not x[:, t]: the backward of indexing per step writes a full-size gradient each time (O(T^2))
        for x_t, label_t in zip(x.unbind(1), prev_labels.unbind(1), strict=True):
            out, state = self.step(x_t, label_t, state)
            logits.append(out)
        return torch.stack(logits, dim=1), state

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """Per-step logits ``[B, T, n_way]`` of image sequences ``[B, T, 1, S, S]`` whose labels ``[B, T]`` are fed
        one step late (:func:`shifted_labels`): the prediction at step ``t`` never sees label ``t``."""
        return self.run(self.images(x), shifted_labels(labels, self.n_way, x.dtype))[0]

    def query_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """The suite's protocol for one episode: the support sequence (labels one step late), then each query as its
        own next step (its input label slot holds the *last support* label; the query's own label is never fed).
        Returns ``[Q, n_way]``."""
        _, state = self.run(self.images(support_x[None]), shifted_labels(support_y[None], self.n_way, support_x.dtype))
        n_query = query_x.shape[0]
        (h, c), memory = state
        state = ((h.expand(n_query, -1), c.expand(n_query, -1)), memory.expand(n_query))
        last = one_hot(support_y[-1:], self.n_way, support_x.dtype).expand(n_query, -1)
        return self.step(self.images(query_x[:, None])[:, 0], last, state)[0]
