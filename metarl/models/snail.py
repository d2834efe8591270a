"""SNAIL (Mishra et al. 2018, "A Simple Neural Attentive Meta-Learner"): TC blocks and causal soft attention.

Only the network, independent of RL: ``SNAIL(input_size, seq_len, blocks, output_size)`` maps a sequence
``[B, T, input_size]`` to ``[B, T, output_size]`` and output ``t`` depends on inputs ``0..t`` only (tests hold it to
that). An RL agent feeds it (observation, previous action, reward, done) per step; a few-shot classifier feeds it
(example, label of the previous examples) and reads the last step.

Blocks, as in the paper's section 3 (channels are concatenated, so every block widens the features):

- ``DenseBlock(dilation, D)``: a causal convolution of kernel 2 and the given dilation, gated
  (``tanh(conv_f) * sigmoid(conv_g)``, D filters), concatenated to its input;
- ``TCBlock(T, D)``: ``ceil(log2 T)`` dense blocks with dilations 2, 4, 8, ... (the paper's ``2^i``, i >= 1; as
  written there, a TC block alone reaches back by even offsets only; the attention blocks see every earlier step);
- ``AttentionBlock(K, V)``: single-head soft attention with key size K and value size V, each step attending to
  itself and the steps before it (logits scaled by ``1 / sqrt(K)``), the read values concatenated to the input.

``PRESETS`` holds block lists. ``omniglot`` is the paper's few-shot classifier (Attention(64, 32), TC(T, 128),
Attention(256, 128), TC(T, 128), Attention(512, 256)). ``bandit_mdp`` / ``bandit_mdp_value`` are the paper's
bandit and tabular-MDP policy and value networks (appendix: both read the inputs through a 32-unit fully connected
layer; policy TC(T, 32), TC(T, 32), Attention(32, 32); value TC(T, 16), TC(T, 16), Attention(16, 16)). The paper's
text was not retrievable in the session that checked this: the sizes come from a third-party reading of the appendix
(a public ``ActorCritic`` SNAIL implementation whose comments list them) and agree with what the session recalled;
the earlier preset (no value network, no input layer) was wrong in those two respects. ``continuous_control``
(two 256-unit ReLU layers, Attention(32, 32), TC(T, 16) x 2, Attention(32, 32)) is still unchecked.

Incremental inference (:meth:`SNAIL.initial_cache`, :meth:`SNAIL.step`): one step of a sequence with a cache of
fixed size, so a step costs one pass through the blocks plus attention over at most ``max_steps`` cached keys,
never the whole prefix again. Per dense block the cache keeps the last ``dilation`` projections of its input through
the convolution's past tap (a shift register; a dilation of ``max_steps`` or more never reaches a real step and keeps
nothing); per attention block the keys and values of the steps so far. ``pos`` counts the steps taken. Every step
returns a new cache (nothing is written in place), so a caller may keep or drop a step's cache per sequence, and
``torch.func.vmap`` over per-task parameters works. Step by step equals the full forward (float64, ``tests``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Block = tuple  # ("tc", filters) | ("attention", key_size, value_size) | ("dense", hidden_units)
Cache = dict[str, Tensor]

PRESETS: dict[str, list[Block]] = {
    "omniglot": [("attention", 64, 32), ("tc", 128), ("attention", 256, 128), ("tc", 128), ("attention", 512, 256)],
    "bandit_mdp": [("dense", 32), ("tc", 32), ("tc", 32), ("attention", 32, 32)],
    "bandit_mdp_value": [("dense", 32), ("tc", 16), ("tc", 16), ("attention", 16, 16)],
    "continuous_control": [
        ("dense", 256),
        ("dense", 256),
        ("attention", 32, 32),
        ("tc", 16),
        ("tc", 16),
        ("attention", 32, 32),
    ],
}


class DenseBlock(nn.Module):
    """Gated causal convolution (kernel 2, ``dilation``), ``filters`` new channels concatenated to the input."""

    def __init__(self, in_channels: int, dilation: int, filters: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv_f = nn.Conv1d(in_channels, filters, kernel_size=2, dilation=dilation)
        self.conv_g = nn.Conv1d(in_channels, filters, kernel_size=2, dilation=dilation)
        self.out_channels = in_channels + filters

    def forward(self, x: Tensor) -> Tensor:
        """``[B, T, C] -> [B, T, C + filters]``; step t sees steps t and t - dilation (zeros before the start).

        The convolution is computed as two matmuls (current tap, and past tap shifted by ``dilation``): the same
        function as ``conv1d`` on the left-padded input, several times faster on a CPU for dilated kernels of size 2,
        and the same arithmetic as :meth:`step`."""
        w_past, w_now, bias = self._taps()
        past = F.pad(F.linear(x, w_past), (0, 0, self.dilation, 0))[:, : x.shape[1]]
        f, g = (past + F.linear(x, w_now, bias)).chunk(2, dim=-1)
        return torch.cat([x, torch.tanh(f) * torch.sigmoid(g)], dim=-1)

    def _taps(self) -> tuple[Tensor, Tensor, Tensor]:
        """Past-tap and current-tap weights ``[2F, C]`` (f then g) and the bias ``[2F]``."""
        weight = torch.cat([self.conv_f.weight, self.conv_g.weight], dim=0)  # [2F, C, 2]
        return weight[..., 0], weight[..., 1], torch.cat([self.conv_f.bias, self.conv_g.bias])

    def cache_length(self, max_steps: int) -> int:
        """Steps of past-tap projections kept: ``dilation``, or 0 when the tap never reaches a real step."""
        return self.dilation if self.dilation < max_steps else 0

    def step(self, x: Tensor, past: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One step ``[B, C] -> [B, C + filters]``; ``past [B, dilation, 2F]`` holds the past tap's projections of
        the last ``dilation`` inputs (oldest first; zeros before the start), or None when it is never needed."""
        w_past, w_now, bias = self._taps()
        pre = F.linear(x, w_now, bias)
        if past is not None:
            pre = past[:, 0] + pre
            past = torch.cat([past[:, 1:], F.linear(x, w_past).unsqueeze(1)], dim=1)
        f, g = pre.chunk(2, dim=-1)
        return torch.cat([x, torch.tanh(f) * torch.sigmoid(g)], dim=-1), past


class TCBlock(nn.Module):
    """``ceil(log2 seq_len)`` dense blocks with dilations 2, 4, ...: a receptive field covering the sequence."""

    def __init__(self, in_channels: int, seq_len: int, filters: int) -> None:
        super().__init__()
        layers, channels = [], in_channels
        for i in range(1, max(1, math.ceil(math.log2(seq_len))) + 1):
            layers.append(DenseBlock(channels, 2**i, filters))
            channels = layers[-1].out_channels
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class AttentionBlock(nn.Module):
    """Causal single-head soft attention; the read values (``value_size``) concatenated to the input."""

    def __init__(self, in_channels: int, key_size: int, value_size: int) -> None:
        super().__init__()
        self.query = nn.Linear(in_channels, key_size)
        self.key = nn.Linear(in_channels, key_size)
        self.value = nn.Linear(in_channels, value_size)
        self.scale = 1.0 / math.sqrt(key_size)
        self.out_channels = in_channels + value_size

    def forward(self, x: Tensor) -> Tensor:
        steps = x.shape[1]
        logits = self.query(x) @ self.key(x).transpose(1, 2) * self.scale  # [B, T, T]
        future = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(diagonal=1)
        probs = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)
        return torch.cat([x, probs @ self.value(x)], dim=-1)

    def step(self, x: Tensor, keys: Tensor, values: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step ``[B, C] -> [B, C + V]`` at position ``pos [B]``: this step's key and value written to slot
        ``pos`` of ``keys [B, S, K]`` / ``values [B, S, V]``, then attention over slots ``0..pos``."""
        slots = torch.arange(keys.shape[1], device=x.device)
        here = (slots == pos.unsqueeze(-1)).unsqueeze(-1)  # [B, S, 1]
        keys = torch.where(here, self.key(x).unsqueeze(1), keys)
        values = torch.where(here, self.value(x).unsqueeze(1), values)
        logits = (self.query(x).unsqueeze(1) @ keys.transpose(1, 2)).squeeze(1) * self.scale  # [B, S]
        logits = logits.masked_fill(slots > pos.unsqueeze(-1), float("-inf"))
        read = (torch.softmax(logits, dim=-1).unsqueeze(1) @ values).squeeze(1)
        return torch.cat([x, read], dim=-1), keys, values


class DenseLayer(nn.Module):
    """A per-step fully connected ReLU layer (replaces the features, not concatenated)."""

    def __init__(self, in_channels: int, units: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, units)
        self.out_channels = units

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.linear(x))


class SNAIL(nn.Module):
    """The block stack and a per-step linear output layer: ``[B, T, input_size] -> [B, T, output_size]``."""

    def __init__(self, input_size: int, seq_len: int, blocks: Sequence[Block] | str, output_size: int) -> None:
        super().__init__()
        spec = PRESETS[blocks] if isinstance(blocks, str) else list(blocks)
        layers: list[nn.Module] = []
        channels = input_size
        for block in spec:
            kind, *sizes = block
            if kind == "tc":
                layer: nn.Module = TCBlock(channels, seq_len, *sizes)
            elif kind == "attention":
                layer = AttentionBlock(channels, *sizes)
            elif kind == "dense":
                layer = DenseLayer(channels, *sizes)
            else:
                raise ValueError(f"unknown SNAIL block {kind!r} (tc, attention, dense)")
            layers.append(layer)
            channels = layer.out_channels
        self.seq_len = seq_len
        self.blocks = nn.Sequential(*layers)
        self.feature_size = channels
        self.output = nn.Linear(channels, output_size)

    def features(self, x: Tensor) -> Tensor:
        """The last block's features ``[B, T, feature_size]`` (for heads other than the linear output)."""
        return self.blocks(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))

    # -- incremental inference ----------------------------------------------------------------------------------
    def initial_cache(self, batch_size: int, max_steps: int | None = None) -> Cache:
        """The empty cache of ``batch_size`` sequences of at most ``max_steps`` (default ``seq_len``) steps: zeros in
        the parameters' dtype and device, ``pos`` 0."""
        steps = max_steps or self.seq_len
        ref = self.output.weight
        cache: Cache = {"pos": torch.zeros(batch_size, dtype=torch.long, device=ref.device)}
        for name, layer in self._dense_blocks():
            length = layer.cache_length(steps)
            if length:
                width = 2 * layer.conv_f.out_channels
                cache[name] = torch.zeros(batch_size, length, width, dtype=ref.dtype, device=ref.device)
        for i, layer in enumerate(self.blocks):
            if isinstance(layer, AttentionBlock):
                for part, linear in (("keys", layer.key), ("values", layer.value)):
                    size = (batch_size, steps, linear.out_features)
                    cache[f"{i}.{part}"] = torch.zeros(size, dtype=ref.dtype, device=ref.device)
        return cache

    def step_features(self, x: Tensor, cache: Cache) -> tuple[Tensor, Cache]:
        """The features of one more step ``x [B, input_size] -> [B, feature_size]`` and the cache after it."""
        new: Cache = {"pos": cache["pos"] + 1}
        pos = cache["pos"]
        for i, layer in enumerate(self.blocks):
            if isinstance(layer, TCBlock):
                for j, dense in enumerate(layer.layers):
                    name = f"{i}.{j}"
                    x, past = dense.step(x, cache.get(name))
                    if past is not None:
                        new[name] = past
            elif isinstance(layer, AttentionBlock):
                x, new[f"{i}.keys"], new[f"{i}.values"] = layer.step(x, cache[f"{i}.keys"], cache[f"{i}.values"], pos)
            else:
                x = layer(x)
        return x, new

    def step(self, x: Tensor, cache: Cache) -> tuple[Tensor, Cache]:
        """One step of the network, ``[B, input_size] -> [B, output_size]``, and the cache after it."""
        features, cache = self.step_features(x, cache)
        return self.output(features), cache

    def _dense_blocks(self) -> list[tuple[str, DenseBlock]]:
        return [
            (f"{i}.{j}", dense)
            for i, layer in enumerate(self.blocks)
            if isinstance(layer, TCBlock)
            for j, dense in enumerate(layer.layers)
        ]
