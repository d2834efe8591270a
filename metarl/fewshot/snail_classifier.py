"""SNAIL as a few-shot classifier (Mishra et al. 2018, sec. 4.1): an embedding, then the SNAIL block stack over
the sequence of the ``N*K`` labelled support examples followed by one unlabelled query.

Input of step ``t``: the ``Conv4`` embedding of example ``t`` concatenated with its one-hot label; the query's label
slot is all zeros (the query label is never an input: it is used for the loss only). The prediction is the SNAIL
output (``N`` logits) at the last step, the query's. Blocks: :data:`metarl.models.snail.PRESETS` ``"omniglot"``,
the paper's Omniglot stack (Attention(64, 32), TC(T, 128), Attention(256, 128), TC(T, 128), Attention(512, 256),
then a per-step linear layer to ``N`` outputs, the paper's 1x1 convolution), with ``T = N*K + 1``.

Several queries per episode: as in the paper (one query per sequence), each query gets its own sequence, the same
support steps followed by that query, so a query never sees another query (the alternative, appending all queries
to one causal sequence, would let later queries attend to earlier unlabelled ones and make the sequence length
differ between training and test). The ``Q`` sequences of an episode (and of a batch of episodes) run as one batch.

The embedding is the suite's ``Conv4`` (64 filters, max-pooling: a 64-d vector for 28x28 images). The paper's
Omniglot embedding is a four-block convolutional network of this kind; its exact layers (activation, a final
fully connected layer) were not re-checked against the paper in the session that wrote this. Batch norm uses batch
statistics (as everywhere in the suite): support and query sets are embedded in separate calls, so support features
never depend on a query image; the query call normalises over the episode's queries (the suite's transductive
protocol, the same for every method).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.snail import SNAIL
from .comparison import one_hot
from .models import Conv4

SNAIL_BLOCKS = "omniglot"
"""The preset of :class:`metarl.models.snail.SNAIL` used for few-shot classification (the paper's Omniglot stack)."""


def snail_sequences(support_emb: Tensor, support_y: Tensor, query_emb: Tensor, n_way: int) -> Tensor:
    """``[Q, S + 1, D + n_way]`` input sequences of one episode: the ``S`` support steps (embedding, one-hot label)
    in their given order, then query ``q`` with an all-zero label slot (one sequence per query)."""
    support = torch.cat([support_emb, one_hot(support_y, n_way, support_emb.dtype)], dim=-1)  # [S, D + n]
    query = torch.cat([query_emb, query_emb.new_zeros(query_emb.shape[0], n_way)], dim=-1)  # [Q, D + n]
    n_query = query.shape[0]
    return torch.cat([support[None].expand(n_query, -1, -1), query[:, None, :]], dim=1)


class SnailClassifier(nn.Module):
    """``Conv4`` embedding + :class:`SNAIL` over (support..., query) sequences of ``n_way * k_shot + 1`` steps."""

    def __init__(self, n_way: int, k_shot: int, hidden: int = 64, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.n_way, self.k_shot = n_way, k_shot
        self.embedding = Conv4(n_way=None, in_channels=in_channels, hidden=hidden, image_size=image_size)
        self.seq_len = n_way * k_shot + 1
        self.snail = SNAIL(self.embedding.embed_dim + n_way, self.seq_len, SNAIL_BLOCKS, n_way)

    def sequences(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """The SNAIL input sequences ``[Q, N*K + 1, D + N]`` of one episode (see :func:`snail_sequences`)."""
        if support_x.shape[0] != self.seq_len - 1:
            raise ValueError(
                f"this SNAIL classifier was built for {self.seq_len - 1} support examples "
                f"({self.n_way}-way {self.k_shot}-shot), got {support_x.shape[0]}"
            )
        s, q = self.embedding.embed(support_x), self.embedding.embed(query_x)  # separate calls (batch norm)
        return snail_sequences(s, support_y, q, self.n_way)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Query logits ``[Q, n_way]`` of one episode: the SNAIL output at each query sequence's last step."""
        return self.snail(self.sequences(support_x, support_y, query_x))[:, -1]

    def episodes_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """``[B, Q, n_way]`` query logits of ``B`` episodes (leading task axis): each episode embedded on its own,
        all ``B * Q`` sequences through SNAIL in one batch."""
        seqs = [self.sequences(support_x[i], support_y[i], query_x[i]) for i in range(support_x.shape[0])]
        out = self.snail(torch.cat(seqs))[:, -1]
        return out.view(support_x.shape[0], query_x.shape[1], self.n_way)
