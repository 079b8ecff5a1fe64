"""A run folder as the trainer sees it: claimed once, checkpointed atomically, resumed from.

``last.pt`` / ``best.pt`` are replaced atomically (write, fsync, rename); ``metrics.jsonl`` gets one
line per epoch. A folder that already holds a run is never overwritten silently: training into it
needs ``resume`` (continue) or ``overwrite`` (start again, removing the old run's files).
"""

from __future__ import annotations

import json
from pathlib import Path

from ppvae.checkpoint import load, save_atomic
from ppvae.errors import CheckpointError, ConfigError
from ppvae.paths import ensure_writable_dir

RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = ensure_writable_dir(path, "run folder")  # before any work: a bad --out fails now

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def claim(self, overwrite: bool) -> None:
        """Make the folder this new run's: refuse one holding a run unless ``overwrite``."""
        present = [f for f in RUN_FILES if self.has(f)]
        if not present:
            return
        if not overwrite:
            raise ConfigError(
                f"{self.path} already holds a run ({', '.join(present)}{self._epoch_note()}); continue it with "
                "--resume (resume=True), replace it with --overwrite (overwrite=True), or choose another --out"
            )
        for f in present:
            (self.path / f).unlink()

    def _epoch_note(self) -> str:
        try:
            ckpt = load(self.path / "last.pt")
            return f", trained to epoch {ckpt['epoch']}"
        except CheckpointError:
            return ""

    def checkpoint_to_resume(self, which: str = "last") -> dict:
        """The checkpoint to continue from; a missing or unreadable ``last.pt`` offers ``best.pt``."""
        try:
            return load(self.path / f"{which}.pt")
        except CheckpointError as e:
            if which == "last" and self.has("best.pt"):
                try:
                    epoch = load(self.path / "best.pt")["epoch"]
                except CheckpointError:
                    raise e from None
                raise CheckpointError(
                    f"{e}. {self.path / 'best.pt'} is readable (epoch {epoch}): resume from it with "
                    "--resume best (resume='best'); the epochs after it are trained again"
                ) from None
            raise

    def save(self, state: dict, best: bool) -> None:
        save_atomic(state, self.path / "last.pt")
        if best:
            save_atomic(state, self.path / "best.pt")

    def write_metrics(self, history: list[dict]) -> None:
        (self.path / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))

    def append_metrics(self, metrics: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
