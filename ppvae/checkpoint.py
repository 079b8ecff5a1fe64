"""Atomic checkpoints: write to a temporary file in the same folder, then rename over the target.

A run killed mid-write leaves the previous checkpoint intact: ``os.replace`` is atomic on POSIX and
Windows when source and target are on the same filesystem.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import torch

from ppvae.errors import CheckpointError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    with atomic_write(path) as f:
        torch.save(obj, f)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def load(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}: pass the run folder written by `ppvae train --out DIR` "
            "(it holds last.pt and best.pt) or the path of a .pt file"
        )
    try:
        # weights_only=False: the checkpoint holds configs and RNG states, not only tensors; only
        # load checkpoints you wrote yourself.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # corrupt or not a checkpoint
        raise CheckpointError(f"could not read checkpoint {path}: {e}") from e
