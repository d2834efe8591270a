"""Shared fixtures.

Tests run torch on one thread: on the 2 shared cores of CI, two threads per process made updates 10-100x slower
whenever another process (a Ray worker, a background run) was busy.
"""

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
