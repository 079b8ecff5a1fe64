"""A training run on disk: its folder, its checkpoint, and rebuilding the pair and data from it.

``ppvae train --out DIR`` writes ``DIR/last.pt``, ``DIR/best.pt``, ``DIR/metrics.jsonl`` and
figures; the checkpoint's ``meta`` records the model family, its options and how to reload the
dataset, so ``ppvae evaluate DIR`` and ``ppvae sample DIR`` need nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppvae.checkpoint import load
from ppvae.data import Dataset, load_dataset, load_file
from ppvae.errors import CheckpointError
from ppvae.registry import build


def dataset_meta(name: str | None, file: str | None, root: str | None, **kwargs) -> dict[str, Any]:
    return {"name": name, "file": file, "root": root, **kwargs}


def load_data(spec: dict[str, Any], download: bool = False) -> Dataset:
    """The dataset a run was trained on, from its recorded spec."""
    opts = {k: v for k, v in spec.items() if k not in ("name", "file", "root") and v is not None}
    if spec.get("file"):
        return load_file(spec["file"], **{k: v for k, v in opts.items() if k in ("seed",)})
    return load_dataset(spec["name"], spec.get("root"), download=download, **opts)


def checkpoint_path(path: str | Path, which: str = "best") -> Path:
    """``path`` itself if a file, else ``path/best.pt`` (or ``last.pt``) of a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in (f"{which}.pt", "last.pt", "best.pt"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"no checkpoint (best.pt / last.pt) in {path}: is it a folder written by `ppvae train --out`?")
    return path


def load_pair(path: str | Path, device: str | torch.device = "cpu", which: str = "best"):
    """``(model, guide, checkpoint)`` rebuilt from a run folder or checkpoint file."""
    ckpt = load(checkpoint_path(path, which), map_location=device)
    meta = ckpt.get("meta") or {}
    if "family" not in meta:
        raise CheckpointError(
            f"{path} was not written by `ppvae train` (no model family recorded): rebuild the "
            "model and guide yourself and load ckpt['model_state'] / ckpt['guide_state']"
        )
    model, guide, _ = build(meta["family"], meta["x_dim"], meta.get("model_options"))
    model.load_state_dict(ckpt["model_state"])
    guide.load_state_dict(ckpt["guide_state"])
    return model.to(device).eval(), guide.to(device).eval(), ckpt
