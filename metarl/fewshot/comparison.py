"""Learned-comparison networks: the relation network and the Siamese verification network (28x28 Omniglot).

Both solve an episode by *comparing* each query with the support set through a learned scorer, instead of a fixed
distance (ProtoNets) or cosine attention (MatchingNets). Both take only images as input: support labels are used only
to group support features by class, and query labels never enter the model (they are used for the loss only).

- Relation network (Sung et al. 2018, "Learning to Compare", Omniglot network of the paper's code
  ``omniglot_train_one_shot.py``): embedding f = 4 conv blocks of 64 3x3 filters with batch norm and ReLU, the first
  two unpadded and max-pooled, the last two padded and not pooled (28 -> 26 -> 13 -> 11 -> 5 -> 5 -> 5: a 64x5x5
  feature map). Class feature = *sum* of the class's support feature maps (K-shot). Relation module g on the
  channel-wise concatenation ``[class feature, query feature]`` (128x5x5): 2 conv blocks of 64 filters (padded, max-
  pooled: 5 -> 2 -> 1), then FC 64 -> 8 (ReLU) -> 1 (sigmoid): a relation score in [0, 1] per (query, class) pair.
- Siamese network (Koch, Zemel & Salakhutdinov 2015): a twin embedding (conv-ReLU-max-pool blocks of 64, 128, 128
  filters, a conv of 256, a sigmoid fully connected layer), ``p(same) = sigmoid(sum_j alpha_j |h1_j - h2_j| + b)``.
  The paper's kernels (10x10, 7x7, 4x4, 4x4) are for 105x105 images; on the suite's 28x28 images they do not fit
  (28 -> 19 -> 9 -> 3 -> 1 leaves nothing for the 4x4 layer), so every kernel is 3x3 with padding 1
  (28 -> 14 -> 7 -> 3, a 256x3x3 map), and the embedding width is ``embed_dim`` (paper: 4096). No batch norm (the
  paper has none), so each image's embedding is independent of its batch and the output is exactly symmetric.

Batch norm in the relation network uses batch statistics always (as ``Conv4``, and as the paper's code, which never
switches to evaluation mode): support and query sets are embedded in separate calls; the relation module normalises
over the episode's (query, class) pairs, which is invariant to their order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _block(in_channels: int, out_channels: int, padding: int, pool: bool, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding)]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels, track_running_stats=False))
    layers.append(nn.ReLU())
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def one_hot(labels: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """``[S] -> [S, n_way]`` (a comparison, so it needs no ``F.one_hot`` int64 round trip)."""
    return (labels[:, None] == torch.arange(n_way, device=labels.device)).to(dtype)


class RelationNet(nn.Module):
    """Embedding ``encoder`` + ``relation`` module of Sung et al. 2018 (see the module docstring for the shapes)."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, relation_dim: int = 8, image_size: int = 28) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            _block(in_channels, hidden, padding=0, pool=True),
            _block(hidden, hidden, padding=0, pool=True),
            _block(hidden, hidden, padding=1, pool=False),
            _block(hidden, hidden, padding=1, pool=False),
        )
        side = ((image_size - 2) // 2 - 2) // 2
        if side < 2:
            raise ValueError(f"image_size {image_size} is too small for the relation network (needs >= 14)")
        self.relation_convs = nn.Sequential(
            _block(2 * hidden, hidden, padding=1, pool=True), _block(hidden, hidden, padding=1, pool=True)
        )
        rel_side = side // 2 // 2
        self.fc1 = nn.Linear(hidden * rel_side * rel_side, relation_dim)
        self.fc2 = nn.Linear(relation_dim, 1)

    def embed(self, x: Tensor) -> Tensor:
        """``[N, C, H, W]`` images (one set: batch norm uses its statistics) -> ``[N, hidden, 5, 5]`` feature maps."""
        if x.dim() != 4:
            raise ValueError(f"RelationNet embeds one set of images [N, C, H, W], got shape {tuple(x.shape)}")
        return self.encoder(x)

    def relation(self, pairs: Tensor) -> Tensor:
        """``[P, 2 * hidden, 5, 5]`` concatenated (class, query) feature maps -> ``[P]`` relation scores in [0, 1]."""
        z = self.relation_convs(pairs).flatten(1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z)))).squeeze(-1)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """Relation scores ``[Q, n_way]`` of one episode (labels ``0..n_way-1``; query labels are not an input)."""
        s, q = self.embed(support_x), self.embed(query_x)
        # K-shot: the class feature is the sum of its support feature maps (the paper's element-wise sum).
        classes = torch.einsum("sn,schw->nchw", one_hot(support_y, n_way, s.dtype), s)
        n_query = q.shape[0]
        pairs = torch.cat(
            [classes[None].expand(n_query, -1, -1, -1, -1), q[:, None].expand(-1, n_way, -1, -1, -1)], dim=2
        )  # [Q, n_way, 2C, h, w]: class features first, as in the paper's code
        return self.relation(pairs.flatten(0, 1)).view(n_query, n_way)


class SiameseNet(nn.Module):
    """Koch et al. 2015's verification network, adapted to 28x28 inputs (see the module docstring)."""

    def __init__(self, in_channels: int = 1, embed_dim: int = 4096, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(in_channels, 64, padding=1, pool=True, norm=False),
            _block(64, 128, padding=1, pool=True, norm=False),
            _block(128, 128, padding=1, pool=True, norm=False),
            _block(128, 256, padding=1, pool=False, norm=False),
        )
        side = image_size // 2 // 2 // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for three 2x2 poolings")
        self.fc = nn.Linear(256 * side * side, embed_dim)
        self.out = nn.Linear(embed_dim, 1)  # the weights alpha_j of the L1 distance, and the bias

    def embed(self, x: Tensor) -> Tensor:
        """``[N, C, H, W] -> [N, embed_dim]`` sigmoid features (each image independently: no batch norm)."""
        return torch.sigmoid(self.fc(self.features(x).flatten(1)))

    def verify_logits(self, h1: Tensor, h2: Tensor) -> Tensor:
        """Logits of ``p(same)`` ``[...]`` from embeddings ``[..., D]`` (symmetric: ``|h1 - h2|``)."""
        return self.out((h1 - h2).abs()).squeeze(-1)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Logits of ``p(same | x1[i], x2[i])``, ``[N]``, for two aligned batches of images."""
        return self.verify_logits(self.embed(x1), self.embed(x2))

    def class_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """One-shot classification ``[Q, n_way]``: per class, the highest "same" logit over its support examples
        (nearest match, Koch et al. sec. 4.3; with one shot, the support example's logit)."""
        logits = self.verify_logits(self.embed(query_x)[:, None, :], self.embed(support_x)[None, :, :])  # [Q, S]
        in_class = one_hot(support_y, n_way, torch.bool).T  # [n_way, S]
        per_class = logits[:, None, :].masked_fill(~in_class[None], float("-inf"))  # [Q, n_way, S]
        return per_class.max(dim=-1).values
