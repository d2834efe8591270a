"""Ctrl-C in a terminal during `metarl train` on Ray workers: the whole foreground process group gets SIGINT.

The run must finish the iteration in flight, checkpoint it, exit 130, and leave no Ray process behind. Run as a
subprocess in its own session so the signal reaches the program, its Ray head and its workers exactly as a terminal
would send it (Linux: process trees are read from /proc).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metarl.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process trees from /proc (Linux)")

TINY_RAY = [
    "sampler.backend=ray",
    "sampler.num_workers=2",
    "maml.meta_batch_size=4",
    "maml.episodes_per_task=4",
    "policy.hidden_sizes=[16, 16]",
    "env.kwargs.horizon=20",
    "iterations=1000",
    "logging.checkpoint_every=1000",
]


def _parents() -> dict[int, int]:
    """``pid -> parent pid`` of every process still alive."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited while we looked
                continue
            out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents, found, frontier = _parents(), set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def test_ctrl_c_to_the_process_group_checkpoints_and_leaves_no_ray_process(tmp_path, repo_root):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "metarl", "train", "experiments/maml_trpo_navigation.yaml", "--no-progress"]
    command += ["--run-dir", str(run), *sum([["--set", s] for s in TINY_RAY], [])]
    proc = subprocess.Popen(
        command, cwd=repo_root, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    progress, deadline = run / "progress.csv", time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if progress.is_file() and len(progress.read_text().splitlines()) >= 3:  # header + two finished iterations
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"training ended before the signal: {proc.communicate()[1][-2000:]}"
    ray_processes = _descendants(proc.pid)
    assert ray_processes, "a Ray run has child processes (head, raylet, workers)"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "stopped by SIGINT after iteration" in err and "(checkpointed)" in err, err[-2000:]
    rows = len(progress.read_text().splitlines()) - 1
    assert load_checkpoint(latest_checkpoint(run))["iteration"] == rows >= 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in ray_processes):
        time.sleep(0.5)
    left = [pid for pid in ray_processes if _alive(pid)]
    assert not left, f"processes of the run still alive after it exited: {left}"
