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
Attention(256, 128), TC(T, 128), Attention(512, 256)). ``bandit_mdp`` and ``continuous_control`` are the RL
architectures as we read the paper's appendix (TC(T, 32) x 2 + Attention(32, 32); and Attention(32, 32),
TC(T, 16) x 2, Attention(32, 32) after two 256-unit ReLU layers); they were not re-checked against the paper's text
in the session that wrote this, so check them before quoting results as the paper's architecture.

Not done yet: incremental (step-by-step) inference with cached convolution and attention states; every call
recomputes the whole sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Block = tuple  # ("tc", filters) | ("attention", key_size, value_size) | ("dense", hidden_units)

PRESETS: dict[str, list[Block]] = {
    "omniglot": [("attention", 64, 32), ("tc", 128), ("attention", 256, 128), ("tc", 128), ("attention", 512, 256)],
    "bandit_mdp": [("tc", 32), ("tc", 32), ("attention", 32, 32)],
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
        """``[B, T, C] -> [B, T, C + filters]``; step t sees steps t and t - dilation (zeros before the start)."""
        padded = F.pad(x.transpose(1, 2), (self.dilation, 0))
        gated = torch.tanh(self.conv_f(padded)) * torch.sigmoid(self.conv_g(padded))
        return torch.cat([x, gated.transpose(1, 2)], dim=-1)


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
        self.blocks = nn.Sequential(*layers)
        self.feature_size = channels
        self.output = nn.Linear(channels, output_size)

    def features(self, x: Tensor) -> Tensor:
        """The last block's features ``[B, T, feature_size]`` (for heads other than the linear output)."""
        return self.blocks(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))
