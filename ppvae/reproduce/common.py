"""What the IWAE harnesses share: the data, the paper's training config, one cell's evaluation,
and an atomic JSON write (results are read by other processes while cells are still running)."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ppvae.analysis import active_units
from ppvae.checkpoint import write_text_atomic
from ppvae.data import Dataset, load_dataset
from ppvae.errors import ConfigError
from ppvae.evaluate import mean_and_se, per_datapoint_bound
from ppvae.likelihood import log_likelihood

#: binarization -> registered dataset. "dynamic": MNIST grey levels, a fresh Bernoulli draw per
#: batch (the paper's Table 1); "fixed": Larochelle & Murray's binarized MNIST (Appendix D).
DATASET_OF = {"dynamic": "mnist", "fixed": "binarized-mnist"}


def load_iwae_data(binarization: str, data_root: str | None, limit: int | None, valid_size: int = 0, seed: int = 0) -> Dataset:
    """MNIST for the IWAE experiments. ``valid_size=0`` trains on all 60,000 training images as the
    paper did (for the fixed binarization: the official 50,000 train + 10,000 valid pooled); the
    test set is the official 10,000 (binarized once with ``seed`` for the dynamic column)."""
    if binarization not in DATASET_OF:
        raise ConfigError(f"binarization must be one of {', '.join(DATASET_OF)}, got {binarization!r}")
    return load_dataset(DATASET_OF[binarization], data_root, seed=seed, valid_size=valid_size, limit=limit)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """Write-then-rename, so a reader (``--table-only`` in another process) never sees half a file."""
    return write_text_atomic(json.dumps(obj, indent=2), path)


def format_duration(s: float | None) -> str:
    """Seconds as "12.3 s", "4.5 min" or "2.1 h" for the tables; "" when unknown."""
    if s is None:
        return ""
    return f"{s:.1f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


def render_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in columns})
    return buf.getvalue()


def write_tables(out_root: Path, markdown: str, csv_text: str) -> None:
    """``table.md`` and ``table.csv`` in ``out_root``, each replaced atomically."""
    write_text_atomic(markdown, out_root / "table.md")
    write_text_atomic(csv_text, out_root / "table.csv")


def finished_result(cell_dir: Path, budget: str, epochs: int, eval_samples: int, eval_points: int | None) -> dict | None:
    """The cell's ``result.json`` if it was written for this budget and evaluation, else None."""
    path = Path(cell_dir) / "result.json"
    if not path.exists():
        return None
    old = read_json(path)
    same = (old["budget"], old["epochs"], old["eval_samples"], old["eval_points"]) == (budget, epochs, eval_samples, eval_points)
    return old if same else None


def budgets_line(rows: list[dict], budgets: dict, label: str = "Budget(s)") -> str:
    """"Budget(s): medium. medium: <its description>." for the budgets the rows ran under."""
    names = sorted({r["budget"] for r in rows if r["budget"]})
    return (f"{label}: {', '.join(names) or 'none'}. "
            + "; ".join(f"{b}: {budgets[b].description}" for b in names if b in budgets) + ".")


def write_result_tables(out_root: str | os.PathLike, rows: list[dict], render_markdown: Callable[[list[dict]], str],
                        columns: list[str], layout: str) -> list[dict]:
    """Both tables of a harness from its ``rows`` (refused when there are none: ``layout`` names
    where the cells' result.json files should be, e.g. ``<dataset>/<prior>``); returns ``rows``."""
    out_root = Path(out_root)
    if not rows:
        raise ConfigError(f"no result.json under {out_root}/{layout}/: run some cells first")
    write_tables(out_root, render_markdown(rows), render_csv(rows, columns))
    return rows


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def format_active(units: dict[str, dict], order: list[str]) -> str:
    """Active units per stochastic layer, bottom (next to x) first: "19" or "19+5"."""
    return "+".join(str(units[name]["active"]) for name in order if name in units)


@torch.no_grad()
def evaluate_cell(model: Callable, guide: Callable, x: torch.Tensor, *, num_samples: int, seed: int = 0,
                  bound_ks: tuple[int, ...] = (1, 5, 50)) -> dict:
    """Test NLL (importance sampling, ``num_samples`` per datapoint), the IWAE bounds at
    ``bound_ks`` (k=1 is the Monte Carlo ELBO) and Burda's active units, all on ``x``."""
    for m in (model, guide):
        if isinstance(m, torch.nn.Module):
            m.eval()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    log_px = log_likelihood(model, guide, x, num_samples=num_samples)
    nll, se = mean_and_se(-log_px)
    out: dict[str, Any] = {"nll": nll, "nll_se": se, "num_test": int(x.shape[0]), "eval_samples": int(num_samples)}
    # lower bounds on the mean log p(x) (nats, negative); iwae_1 is the Monte Carlo ELBO
    out["bounds"] = {f"iwae_{k}": float(per_datapoint_bound(model, guide, x, "iwae", k).double().mean()) for k in bound_ks}
    units = active_units(guide, x)
    out["active_units"] = {name: {"active": u["active"], "total": u["total"]} for name, u in units.items()}
    out["eval_seconds"] = time.perf_counter() - t0
    return out
