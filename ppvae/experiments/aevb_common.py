"""What the AEVB-report experiments share: budgets, the data root, training one model into a
resumable run folder, and writing result tables.

Every experiment module (``ppvae.experiments.aevb_*``) runs at a ``quick`` budget (seconds: the
tutorials' CI mode, small slices of the data) or a ``full`` one (the budget recorded in
``docs/aevb_report.md``), one model after another, each in its own run folder
``OUT/<experiment>/<model>/`` so that an interrupted run continues where it stopped and a finished
model is loaded, not retrained. The machine the report's figures come from is a 2-core CPU with one
torch thread; every budget is sized for it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import ppvae
from ppvae import plots
from ppvae.data import Dataset
from ppvae.errors import ConfigError

BUDGETS = ("quick", "full")


def check_budget(budget: str) -> str:
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    return budget


def default_data_root() -> str | None:
    """``$PPVAE_DATA``, else the staged ``shared/datasets`` next to the checkout, else None (ppvae's
    default, ``~/.cache/ppvae``)."""
    if os.environ.get("PPVAE_DATA"):
        return os.environ["PPVAE_DATA"]
    staged = Path(__file__).resolve().parents[3] / "shared" / "datasets"
    return str(staged) if staged.is_dir() else None


def load(name: str, data_root: str | None, limit: int | None = None, quick: bool = False,
         valid_size: int | None = None) -> Dataset:
    """The dataset ``name``; in quick mode, when it is not staged, scikit-learn's digits instead
    (so the tutorials' CI run needs no files), with a note saying so."""
    try:
        return ppvae.load_dataset(name, data_root, limit=limit, valid_size=valid_size)
    except (ppvae.PPVAEError, OSError) as e:
        if not quick:
            raise
        print(f"[quick mode] {name} is not available ({type(e).__name__}); using the bundled digits instead")
        return ppvae.load_dataset("digits", limit=limit)


def build_vae(x_dim: int, z_dim: int, encoder_hidden: Sequence[int], decoder_hidden: Sequence[int] | None = None,
              activation: str = "tanh", likelihood: str = "bernoulli", seed: int = 0):
    """A one-stochastic-layer VAE (the ``vae`` family's model and guide) whose encoder and decoder
    may have different hidden layers (the encoder-depth study); seeded before building."""
    from ppvae.guides.vae import GaussianEncoder
    from ppvae.models.vae import VAE, VAEConfig

    dec = tuple(decoder_hidden if decoder_hidden is not None else encoder_hidden)
    ppvae.seed_everything(seed)
    model = VAE(x_dim, VAEConfig(z_dims=(z_dim,), hidden=(dec,), activation=activation, likelihood=likelihood))
    guide = GaussianEncoder(x_dim, VAEConfig(z_dims=(z_dim,), hidden=(tuple(encoder_hidden),), activation=activation,
                                             likelihood=likelihood))
    return model, guide


def vae_meta(data: Dataset, z_dim: int, hidden: Sequence[int], activation: str = "tanh") -> dict:
    """What a run folder records so that ``ppvae evaluate`` can rebuild a symmetric VAE."""
    return {"family": "vae", "model_options": {"z_dims": [z_dim], "hidden": [list(hidden)], "activation": activation,
                                               "likelihood": data.likelihood},
            "x_dim": data.x_dim, "image_shape": list(data.image_shape)}


@dataclass
class Trained:
    """One trained model of an experiment."""

    name: str
    model: Any
    guide: Any
    history: list[dict]
    wall_s: float  # wall-clock seconds of the training calls (this session and resumed ones)
    cpu_s: float  # CPU seconds of the training epochs (the trainer's cpu_seconds, summed)


def train(name: str, model, guide, data: Dataset, out: Path, *, meta: dict | None = None,
          callbacks: Sequence[Callable[[dict], None]] = (), **settings) -> Trained:
    """Train ``model``/``guide`` into ``out/name`` (resuming it if it is there, loading it when it
    is finished) with ``ppvae.fit(**settings)``; returns the model with its whole history."""
    folder = out / name
    resume = (folder / "last.pt").exists()
    settings.setdefault("progress", False)
    t0 = time.perf_counter()
    result = ppvae.fit(model, guide, data, out_dir=folder, resume=resume, meta=meta or {}, callbacks=callbacks, **settings)
    wall = time.perf_counter() - t0
    stamp = folder / "wall_seconds.json"
    previous = json.loads(stamp.read_text()).get("wall_s", 0.0) if stamp.exists() else 0.0
    wall_total = previous + (wall if result.epochs_trained else 0.0)
    stamp.write_text(json.dumps({"wall_s": wall_total}))
    cpu = sum(h.get("cpu_seconds", 0.0) for h in result.history)
    return Trained(name, model.eval(), guide.eval(), result.history, wall_total, cpu)


def machine() -> str:
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch thread(s), torch {torch.__version__}"


def write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))
    return path


def eval_split(data: Dataset, split: str, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """The first ``n`` rows of a split as the models are scored on them. A dynamically binarized
    dataset keeps grey levels in its training split (binarized afresh for every minibatch) and its
    validation and test splits binarized once: its training rows are binarized here, once, with a
    fixed seed, so that training and test bounds are comparable (a Bernoulli log-density of grey
    levels is not a log-probability of any image)."""
    x = data.split(split)[:n]
    if data.dynamic_binarization and split == "train":
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))
    return x


@torch.no_grad()
def mean_bound(model, guide, x: torch.Tensor, objective: str = "elbo-analytic", particles: int = 1,
               batch_size: int = 500) -> float:
    """The objective's per-datapoint bound averaged over the rows of ``x``."""
    obj = ppvae.get_objective(objective, particles)
    total = sum(float(obj.bound(model, guide, x[i:i + batch_size]).sum()) for i in range(0, x.shape[0], batch_size))
    return total / x.shape[0]


def last(history: list[dict], key_prefix: str) -> float | None:
    """The last epoch's value of the first metric whose name starts with ``key_prefix``."""
    if not history:
        return None
    for k, v in history[-1].items():
        if k.startswith(key_prefix):
            return float(v)
    return None


def save_figure(fig, path: Path) -> Path:
    """Lay out a matplotlib ``Figure`` and write it (:func:`ppvae.plots.save_figure`)."""
    fig.tight_layout()
    return plots.save_figure(fig, path)


def experiment_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The options every AEVB experiment takes: --budget, --out, --data-root, --threads, --seed."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n\n")[0])
    p.add_argument("--budget", choices=tuple(BUDGETS), default="quick")
    p.add_argument("--out", default="runs/aevb")
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p


def parse_experiment_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, and set the torch thread count (one thread: the report's machine)."""
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args
