"""Checkpoints: atomic round-trip, and every corrupt or foreign file is one CheckpointError."""

import pickle

import numpy as np
import pytest
import torch

from metarl.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)


def test_round_trip_keeps_tensors_and_plain_values(tmp_path):
    state = {
        "iteration": 4,
        "params": {"w": torch.randn(3, 2, dtype=torch.float64)},
        "rng": torch.get_rng_state(),
        "numpy_rng": np.random.default_rng(1).bit_generator.state,
        "config": {"seed": 0, "maml": {"fast_lr": 0.1}},
    }
    path = save_checkpoint(tmp_path / "ck.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 4
    assert torch.equal(loaded["params"]["w"], state["params"]["w"])
    assert torch.equal(loaded["rng"], state["rng"])
    assert loaded["numpy_rng"] == state["numpy_rng"]
    assert loaded["config"] == state["config"]
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left behind


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", {"x": torch.ones(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or not a metarl checkpoint"):
        load_checkpoint(path)


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="no 'metarl-checkpoint-v1' marker"):
        load_checkpoint(plain)

    class Evil:
        def __reduce__(self):
            return (print, ("should never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "metarl-checkpoint-v1", "x": Evil()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_latest_checkpoint_orders_by_iteration(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for it in (2, 10, 9):
        save_checkpoint(checkpoint_path(tmp_path, it), {"iteration": it})
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 10)


def test_resolve_checkpoint_reads_each_kind_of_name(tmp_path):
    def never():
        raise AssertionError("the best rule must only run for 'best'")

    with pytest.raises(CheckpointError, match="has no checkpoint"):
        resolve_checkpoint(tmp_path, None, never)
    for i in (2, 10):
        save_checkpoint(checkpoint_path(tmp_path, i), {"iteration": i})
    assert resolve_checkpoint(tmp_path, None, never).name == "iter_000010.pt"
    assert resolve_checkpoint(tmp_path, "2", never) == checkpoint_path(tmp_path, 2)
    assert resolve_checkpoint(tmp_path, "checkpoints/iter_000002.pt", never) == checkpoint_path(tmp_path, 2)
    absolute = tmp_path / "elsewhere.pt"
    assert resolve_checkpoint(tmp_path, str(absolute), never) == absolute
    chosen = checkpoint_path(tmp_path, 2)
    assert resolve_checkpoint(tmp_path, "best", lambda: chosen) == chosen
