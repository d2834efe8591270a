"""Replay a fixed-shape tensor function from one CUDA graph capture.

On a GPU the MAML-TRPO update is bound by kernel launches, not arithmetic (DESIGN.md: 78,436 launches for 0.17 s of
GPU work in one loop-form update). The conjugate-gradient solve calls the same Hessian-vector product ten times on
inputs of one shape, so capturing it once and replaying the graph turns hundreds of launches per product into one.

Backward ops run on the stream their forward ops ran on, so a product that backpropagates through a retained graph
can be captured only if that graph was built on the capturing stream: run the whole update inside
:func:`on_side_stream`, and :func:`cuda_graphed` captures on that stream (on the default stream it does not capture).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


@contextmanager
def on_side_stream(device: torch.device) -> Iterator[None]:
    """Run the block on a fresh CUDA stream, ordered after and before the current one; a no-op off CUDA."""
    if device.type != "cuda":
        yield
        return
    current = torch.cuda.current_stream(device)
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        yield
    current.wait_stream(stream)


def cuda_graphed(fn: Callable[[Tensor], Tensor], example: Tensor, warmup: int = 1) -> Callable[[Tensor], Tensor]:
    """``fn`` as a CUDA graph replay for ``example``'s shape, dtype and device; ``fn`` itself where it cannot be.

    ``fn`` must read only its argument and tensors that stay alive and unchanged between calls (e.g. a retained
    autograd graph built on the current stream), and must not synchronise with the host. Off CUDA, or on the default
    stream, ``fn`` is returned unchanged. The returned function copies its input into the captured buffer, replays,
    and clones the output.
    """
    if example.device.type != "cuda":
        return fn
    stream = torch.cuda.current_stream(example.device)
    if stream == torch.cuda.default_stream(example.device):
        return fn
    static_in = example.detach().clone()
    for _ in range(warmup):
        fn(static_in)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        static_out = fn(static_in)

    def replay(v: Tensor) -> Tensor:
        static_in.copy_(v)
        graph.replay()
        return static_out.clone()

    return replay
