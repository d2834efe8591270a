"""Few-shot models written to be called functionally, and the loss functions the shared learner adapts with.

Parameters are the dict of ``model.named_parameters()``; a learner calls the model with
``torch.func.functional_call(model, params, (x,))``. The last layer is always the submodule ``head`` (parameter names
``head.weight`` / ``head.bias``, see ``HEAD_PREFIX``), so ANIL can adapt only the head.

Batch norm in ``Conv4`` follows MAML: batch statistics always (``track_running_stats=False``: no running buffers, the
same normalisation in training and evaluation), so each forward normalises with the statistics of *its own* input.
Support and query sets are separate forward calls, so the query set never influences support predictions (nor the
adapted parameters). The query forward does normalise over the query batch (the transductive setting of MAML's
reference code), which is the standard protocol; evaluate with the same query size as in training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Params, Batch], Tensor]

DOWNSAMPLE = ("maxpool", "stride")
"""How ``Conv4`` halves the resolution in each block: 2x2 max-pooling or a stride-2 convolution."""

FEATURE_MAPS = ("mean", "flatten")
"""What ``Conv4`` does with its final feature map before the head: average it spatially or flatten it."""

HEAD_PREFIX = "head."
"""Name prefix of the output layer's parameters (what ANIL adapts in its inner loop)."""


def head_names(params: Params) -> list[str]:
    """Names of the head parameters in ``params`` (ANIL's inner-loop parameters)."""
    return [name for name in params if name.startswith(HEAD_PREFIX)]


class SinusoidMLP(nn.Module):
    """The MAML paper's regressor: 1 -> 40 -> 40 -> 1 with ReLU; ``body`` then a linear ``head``."""

    def __init__(self, hidden: int = 40, in_dim: int = 1, out_dim: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., 1] -> [..., 1]``."""
        return self.head(self.body(x))


class ConvBlock(nn.Module):
    """conv 3x3 (same padding) -> batch norm (batch statistics only) -> ReLU -> downsample by 2.

    ``downsample="maxpool"``: stride-1 conv then 2x2 max-pool (Vinyals et al.; Snell et al.). ``"stride"``: a stride-2
    conv and no pooling (MAML's Omniglot network, ``--max_pool=False`` in its reference code), about 4x fewer
    multiply-adds since each conv runs at the output resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: str = "maxpool") -> None:
        super().__init__()
        if downsample not in DOWNSAMPLE:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE}, got {downsample!r}")
        self.pool = downsample == "maxpool"
        stride = 1 if self.pool else 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.norm = nn.BatchNorm2d(out_channels, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class Conv4(nn.Module):
    """The standard few-shot backbone (Vinyals et al. 2016; Finn et al. 2017; Snell et al. 2017).

    Four ``ConvBlock``s of ``hidden`` filters. With max-pooling a 28x28 input becomes a ``hidden``-d embedding
    (28->14->7->3->1, flattened); with strided convs (MAML's Omniglot net) 28->14->7->4->2, then the spatial mean, as in
    MAML's reference code, so the embedding is ``hidden``-d too. ``feature_map="flatten"`` keeps the whole final map
    instead (``hidden * 2 * 2`` after strided convs, as in Reptile's reference code); ``"mean"`` averages it; ``None``
    is the downsampling's default above. With ``n_way`` set, a linear ``head`` maps the
    embedding to ``n_way`` logits (MAML family); with ``n_way=None`` there is no head and the model is an embedding
    network (metric baselines). Parameter names are the same for both downsampling modes.
    """

    def __init__(
        self,
        n_way: int | None,
        in_channels: int = 1,
        hidden: int = 64,
        image_size: int = 28,
        downsample: str = "maxpool",
        feature_map: str | None = None,
    ) -> None:
        super().__init__()
        if feature_map not in (None, *FEATURE_MAPS):
            raise ValueError(f"feature_map must be one of {FEATURE_MAPS} or None, got {feature_map!r}")
        self.n_way = n_way
        self.downsample = downsample
        self.flatten = (feature_map or ("flatten" if downsample == "maxpool" else "mean")) == "flatten"
        self.features = nn.Sequential(
            *[ConvBlock(in_channels if i == 0 else hidden, hidden, downsample) for i in range(4)]
        )
        side = image_size
        for _ in range(4):
            side = side // 2 if downsample == "maxpool" else (side + 1) // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for four 2x2 poolings")
        self.embed_dim = hidden * side * side if self.flatten else hidden
        self.head = nn.Linear(self.embed_dim, n_way) if n_way else None

    def forward(self, x: Tensor, embed_only: bool = False) -> Tensor:
        """``x [N, C, H, W]`` (one task's set) -> logits ``[N, n_way]``, or the embedding ``[N, embed_dim]``.

        Only 4-D input is accepted: a leading task axis would make batch norm pool statistics across tasks.
        Functional form: ``functional_call(model, params, (x,), {"embed_only": True})`` for the embedding.
        """
        if x.dim() != 4:
            raise ValueError(
                f"Conv4 takes one set of images [N, C, H, W], got shape {tuple(x.shape)}; call it per task (or vmap)"
            )
        features = self.features(x)
        z = features.flatten(1) if self.flatten else features.mean(dim=(2, 3))
        if embed_only:
            return z
        if self.head is None:
            raise ValueError("this Conv4 has no head (n_way=None); use embed() or build it with n_way")
        return self.head(z)

    def embed(self, x: Tensor) -> Tensor:
        """The embedding ``[N, embed_dim]`` used by the metric baselines."""
        return self.forward(x, embed_only=True)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of ``argmax(logits, -1) == labels`` as a 0-d float tensor (no gradient)."""
    return (logits.detach().argmax(-1) == labels).float().mean()


def regression_loss(model: nn.Module) -> LossFn:
    """``fn(params, (x, y)) -> MSE`` of ``model`` under ``params``: the sinusoid loss of the MAML paper."""

    def loss(params: Params, batch: Batch) -> Tensor:
        x, y = batch
        return F.mse_loss(functional_call(model, params, (x,)), y)

    return loss


def classification_loss(model: nn.Module) -> LossFn:
    """``fn(params, (x, y)) -> cross entropy`` of ``model``'s logits under ``params`` (labels int64 in 0..N-1)."""

    def loss(params: Params, batch: Batch) -> Tensor:
        x, y = batch
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return loss


def classification_accuracy(model: nn.Module) -> LossFn:
    """``fn(params, (x, y)) -> accuracy`` (for reporting; not differentiable)."""

    def acc(params: Params, batch: Batch) -> Tensor:
        x, y = batch
        with torch.no_grad():
            return accuracy(functional_call(model, params, (x,)), y)

    return acc
