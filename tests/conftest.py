"""Shared fixtures. Tests never touch the network: downloads are off and data comes from disk."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ["VAEKIT_OFFLINE"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core (pytest-xdist): each worker, and every process it starts, computes in one
    # thread, so the workers do not oversubscribe the cores. On this project's 2-core machine: 19 minutes in one
    # process, 24 with two workers of two threads each, 12.5 with two of one thread
    os.environ["OMP_NUM_THREADS"] = "1"
if SHARED_DATA.is_dir():
    os.environ.setdefault("VAEKIT_DATA", str(SHARED_DATA))

needs_fashion = pytest.mark.skipif(
    not (SHARED_DATA / "fashion-mnist").is_dir() and not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Fashion-MNIST is not on disk (needs ../shared/data/fashion-mnist beside the checkout)",
)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write `array` (uint8) as an IDX file, gzipped when `compress`."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture
def venv_bin() -> Path:
    return REPO / ".venv" / "bin"


@pytest.fixture
def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    return env
