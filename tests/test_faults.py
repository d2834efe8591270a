"""Faults during training, end to end: a run SIGKILLed at several points and resumed, and Ray rollout workers killed
while they sample. Either way the run must end with exactly the numbers of an undisturbed run.

(a) ``metarl train`` in a subprocess (local sampler, tiny config) gets SIGKILL (no handler, no last checkpoint) at
three points, with iterations logged past its latest checkpoint (one kill follows the row of a checkpointed
iteration, racing the checkpoint's write), and is resumed with ``--resume`` each time; ``progress.csv`` (time
columns aside) and every tensor of the final checkpoint equal those of an uninterrupted run. (b) A training run on
two Ray workers has a busy worker killed in two of its sampling calls; the workers are replaced, the chunks
re-sampled, and the run equals the local sampler's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray_faults import kill_busy_worker
from test_train import NAV, TINY, _tensors, read_rows

from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.config import load_config
from metarl.run_dir import create_run_dir
from metarl.sampling import make_sampler, ray_sampler
from metarl.train import train

ITERATIONS = 10
CHECKPOINT_EVERY = 3


def tiny_overrides() -> list[str]:
    """TINY (local sampler, 4 tasks x 4 episodes of 20 steps) with checkpoints every 3 of 10 iterations."""
    settings = [*TINY, f"iterations={ITERATIONS}", f"logging.checkpoint_every={CHECKPOINT_EVERY}"]
    return sum([["--set", s] for s in settings], [])


def logged_rows(run: Path) -> int:
    """Complete lines of ``progress.csv`` after its header (0 when there is none yet)."""
    try:
        text = (run / "progress.csv").read_text()
    except FileNotFoundError:
        return 0
    return max(text.count("\n") - 1, 0)


def train_process(args: list[str], repo_root: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "metarl", "train", *args, "--no-progress"]
    return subprocess.Popen(
        command, cwd=repo_root, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def sigkill_after(proc: subprocess.Popen, run: Path, rows: int, timeout_s: float = 60.0) -> None:
    """SIGKILL the process group of ``proc`` as soon as ``progress.csv`` has ``rows`` rows."""
    deadline = time.monotonic() + timeout_s
    try:
        while logged_rows(run) < rows:
            assert proc.poll() is None, f"training ended before the kill: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, f"no row {rows} within {timeout_s} s"
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def without_times(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not k.startswith("time_")} for row in rows]


def assert_same_final_state(a: Path, b: Path) -> None:
    """Final checkpoints hold the same iteration, step count and bitwise equal tensors (params, optimizer, RNG)."""
    state_a, state_b = load_checkpoint(latest_checkpoint(a)), load_checkpoint(latest_checkpoint(b))
    assert (state_a["iteration"], state_a["env_steps"]) == (state_b["iteration"], state_b["env_steps"])
    tensors_a, tensors_b = _tensors(state_a), _tensors(state_b)
    assert tensors_a.keys() == tensors_b.keys() and "torch_rng." in tensors_a and len(tensors_a) > 5
    different = [k for k in tensors_a if not torch.equal(tensors_a[k], tensors_b[k])]
    assert not different, different


def test_sigkill_at_several_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path, repo_root: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = train_process([NAV, "--run-dir", str(straight), *tiny_overrides()], repo_root)
    assert proc.wait(timeout=120) == 0, proc.communicate()[1][-2000:]
    assert len(read_rows(straight)) == ITERATIONS

    # Kill points (rows logged when killed -> checkpoint left), as a rule: 4 -> 3, 6 -> 3 or 6 (the kill races the
    # checkpoint of iteration 6), 8 -> 6. Each resume must drop the rows past its checkpoint and redo them identically.
    kills = []
    args = [NAV, "--run-dir", str(killed), *tiny_overrides()]
    for rows in (4, 6, 8):
        sigkill_after(train_process(args, repo_root), killed, rows)
        kills.append((logged_rows(killed), load_checkpoint(latest_checkpoint(killed))["iteration"]))
        assert rows <= kills[-1][0] < ITERATIONS and kills[-1][1] <= kills[-1][0], kills
        args = ["--resume", str(killed)]
    assert any(logged > checkpoint for logged, checkpoint in kills), kills  # rows past a checkpoint, dropped on resume
    proc = train_process(args, repo_root)
    assert proc.wait(timeout=120) == 0, proc.communicate()[1][-2000:]

    assert without_times(read_rows(killed)) == without_times(read_rows(straight))
    assert [int(r["iteration"]) for r in read_rows(killed)] == list(range(1, ITERATIONS + 1))
    assert_same_final_state(straight, killed)


class _RayKillingWorkers:
    """Stands in for the ``ray`` module inside ``metarl.sampling.ray_sampler``: at the first ``ray.wait`` of the
    chosen sampling calls (1-based), when the call's chunks have been handed to the workers, kills a busy worker."""

    def __init__(self, sampler: ray_sampler.RaySampler, kill_at_calls: set[int]) -> None:
        self.sampler, self.kill_at_calls = sampler, kill_at_calls
        self.calls, self.killed_in_calls = 0, []
        self._seen: object = None

    def __getattr__(self, name: str) -> Any:
        return getattr(ray, name)

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        if self.sampler._in_flight is not self._seen:  # each sampling call has its own in-flight map
            self._seen = self.sampler._in_flight
            self.calls += 1
            if self.calls in self.kill_at_calls and kill_busy_worker(self.sampler):
                self.killed_in_calls.append(self.calls)
        return ray.wait(*args, **kwargs)


def test_ray_workers_killed_while_sampling_are_replaced_and_the_run_equals_the_local_one(
    tmp_path: Path, repo_root: Path, monkeypatch
) -> None:
    monkeypatch.chdir(repo_root)
    iterations = 4
    overrides = [*TINY, f"iterations={iterations}", "sampler.num_workers=2"]
    runs = {}
    for backend in ("local", "ray"):
        config = load_config(NAV, [*overrides, f"sampler.backend={backend}"])
        run = create_run_dir(tmp_path / backend, config)
        with make_sampler(config.env.id, config.env.kwargs, backend=backend, num_workers=2) as sampler:
            if backend == "local":
                train(config, run, sampler, torch.device("cpu"), progress=False)
            else:
                # Two sampling calls per iteration: kill in iteration 1's query and iteration 3's support sampling.
                killer = _RayKillingWorkers(sampler, kill_at_calls={2, 5})
                with monkeypatch.context() as patch:
                    patch.setattr(ray_sampler, "ray", killer)
                    train(config, run, sampler, torch.device("cpu"), progress=False)
                assert killer.killed_in_calls == [2, 5] and killer.calls == 2 * iterations
                assert sampler.workers_replaced == 2
        runs[backend] = run
    assert len(read_rows(runs["ray"])) == iterations
    assert without_times(read_rows(runs["ray"])) == without_times(read_rows(runs["local"]))
    assert_same_final_state(runs["local"], runs["ray"])
