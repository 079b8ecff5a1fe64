"""Reproducing Table 1 of the IWAE paper: VAE vs IWAE, k in {1, 5, 50}, 1 or 2 stochastic layers.

The grid, as the paper trains it::

    for layers in (1, 2):                       784-200-200-50, or 784-200-200-100-100-100-50
        for k in (1, 5, 50):
            VAE:  maximize  (1/k) sum_i log w_i             objective "elbo", k particles
            IWAE: maximize  log (1/k) sum_i w_i             objective "iwae", k particles
    Adam(eps=1e-4), batch 20, 3^i epochs at lr 1e-3 * 10^(-i/7), i = 0..7 (3280 epochs)
    report: test NLL with 5000 importance samples, active units Cov_x(E_q[u|x]) > 1e-2

At k=1 both objectives are the same estimator, so the grid has 10 distinct runs for its 12 rows:
the k=1 cell (``k1-L1``, ``k1-L2``) is trained once and reported in both the VAE and IWAE rows.

Each cell is its own run folder ``OUT/<binarization>/<cell>/`` (``last.pt``, ``metrics.jsonl``,
``result.json``), resumable and independent: several processes may train different ``--cells``
side by side. The table (``OUT/table.md``, ``OUT/table.csv``) is rebuilt from every
``result.json`` present.

References:
  Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR, Table 1.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from ppvae.checkpoint import load, save_atomic
from ppvae.errors import ConfigError
from ppvae.registry import build
from ppvae.reproduce.common import budgets_line, finished_result, evaluate_cell, format_active, format_duration, read_json, write_json_atomic, write_result_tables
from ppvae.reproduce.paper_numbers import PAPER_ACTIVE_UNITS, PAPER_NLL

from ppvae.schedules import burda_stages
from ppvae.train import TrainConfig, fit

# --- budgets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    name: str
    schedule_scale: float  # the "iwae" schedule's stage lengths 3^i times this (at least 1 epoch each)
    max_epochs: int | None  # stop after this many epochs of the schedule (None: the whole schedule)
    batch_size: int
    limit: int | None  # keep only the first rows of each split (None: full MNIST)
    eval_points: int | None  # test points evaluated (None: all 10,000)
    eval_samples: int  # importance samples per test point for log p(x)
    continue_epochs: int  # continuation experiment: epochs of the second objective
    description: str
    lr_schedule: str = "iwae"  # "iwae": Burda's 3^i stages (times schedule_scale); else a ppvae.schedules name over max_epochs
    lr: float = 1e-3  # base learning rate
    snapshots: tuple[int, ...] = ()  # epochs after which the weights are kept (snapshots/epoch_N.pt) for NLL-vs-time

    @property
    def epochs(self) -> int:
        if self.lr_schedule != "iwae":
            return int(self.max_epochs)
        total = sum(burda_stages(self.schedule_scale))
        return min(total, self.max_epochs) if self.max_epochs else total


BUDGETS: dict[str, Budget] = {
    # CI machinery check: 2 epochs (the schedule's first two stages) on 300 images, 50 test points.
    "quick": Budget("quick", 1 / 3**7, 2, 20, 300, 50, 100, 1,
                    "machinery check: first 2 epochs of the schedule on 300 training images; NLL on 50 test points with 100 samples"),
    # The paper's schedule with every stage 81x shorter: stages 1,1,1,1,1,3,9,27 = 44 epochs.
    "medium": Budget("medium", 1 / 3**4, None, 20, None, None, 5000, 27,
                     "the paper's schedule shortened 81x (stages 1,1,1,1,1,3,9,27 = 44 epochs), batch 20, full MNIST, NLL on all 10,000 test points with 5000 samples"),
    # A faster-than-paper schedule for the CPU (issue 14): see fast_budget.
    "fast": None,  # filled in below
    "paper": Budget("paper", 1.0, None, 20, None, None, 5000, 3**7,
                    "the paper's schedule: 3^i epochs at 1e-3*10^(-i/7), i=0..7 (3280 epochs), batch 20, full MNIST, 5000 samples"),
}


FAST_EPOCHS = 2500
FAST_SNAPSHOTS = (10, 25, 50, 100, 200, 400, 600, 800, 1200, 1600, 2000)


def fast_budget(epochs: int = FAST_EPOCHS) -> Budget:
    """The faster-than-paper CPU schedule (issue 14): 5x the paper's batch, so 5x fewer steps per
    epoch, and a cosine decay of the learning rate from 1e-3 to 0 over ``epochs`` (``fast``: 2500
    epochs, 1.25M steps, 13% of the paper's 9.8M; ``fast-N``: the same decay over N epochs, e.g.
    ``fast-1000``, which fits one working session). NLL against CPU-hours: docs/iwae_table1.md."""
    name = "fast" if epochs == FAST_EPOCHS else f"fast-{epochs}"
    return Budget(name, 1.0, epochs, 100, None, None, 5000, 500,
                  f"batch 100, lr 1e-3 with a cosine decay to 0 over {epochs} epochs ({epochs * 600 / 1e6:.2f}M steps), "
                  "Adam eps 1e-4, full MNIST, NLL on all 10,000 test points with 5000 samples", lr_schedule="cosine",
                  snapshots=tuple(e for e in FAST_SNAPSHOTS if e < epochs))


BUDGETS["fast"] = fast_budget()


def get_budget(name: str) -> Budget:
    """A budget by name: those of ``BUDGETS``, or ``fast-N`` (the fast schedule over N epochs)."""
    if name in BUDGETS:
        return BUDGETS[name]
    prefix, _, n = name.partition("-")
    if prefix == "fast" and n.isdigit() and int(n) >= 1:
        return fast_budget(int(n))
    raise ConfigError(f"unknown budget {name!r}; known: {', '.join(BUDGETS)}, or fast-N (the fast schedule over N epochs, e.g. fast-1000)")


# --- the grid --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    objective: str  # "vae" | "iwae" | "both" (k=1: the two objectives coincide)
    k: int
    layers: int

    @property
    def name(self) -> str:
        return f"k1-L{self.layers}" if self.k == 1 else f"{self.objective}-k{self.k}-L{self.layers}"

    @property
    def train_objective(self) -> str:
        # the VAE with k samples is the ELBO averaged over k samples (Monte Carlo KL, as the paper)
        return "iwae" if self.objective == "iwae" and self.k > 1 else "elbo"


KS = (1, 5, 50)
LAYERS = (1, 2)
ROWS: list[tuple[str, int, int]] = [(obj, k, L) for L in LAYERS for obj in ("vae", "iwae") for k in KS]  # the 12 rows
CELLS: list[Cell] = [Cell("both", 1, L) if k == 1 else Cell(obj, k, L) for L in LAYERS for obj in ("vae", "iwae") for k in KS
                     if not (k == 1 and obj == "iwae")]  # the 10 distinct runs


def cell_of_row(objective: str, k: int, layers: int) -> Cell:
    return Cell("both", 1, layers) if k == 1 else Cell(objective, k, layers)


def parse_cells(spec: str | None) -> list[Cell]:
    """``"vae-k5-L1,k1-L2"`` -> cells; ``vae-k1-L1``/``iwae-k1-L1`` mean the shared ``k1-L1``."""
    if not spec:
        return list(CELLS)
    by_name = {c.name: c for c in CELLS}
    by_name.update({f"{o}-k1-L{L}": Cell("both", 1, L) for o in ("vae", "iwae") for L in LAYERS})
    out = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in by_name:
            raise ConfigError(f"unknown cell {name!r}; cells: {', '.join(c.name for c in CELLS)}")
        if by_name[name] not in out:
            out.append(by_name[name])
    return out


def train_config(cell: Cell, budget: Budget, *, seed: int = 0, device: str = "auto", batch_size: int | None = None,
                 compile: bool = False) -> TrainConfig:
    """The paper's optimizer settings for one cell under ``budget`` (``compile``: how, not what, is computed)."""
    return TrainConfig(objective=cell.train_objective, num_particles=cell.k, epochs=budget.epochs,
                       batch_size=batch_size or budget.batch_size, lr=budget.lr, lr_schedule=budget.lr_schedule,
                       schedule_scale=budget.schedule_scale, adam_eps=1e-4, seed=seed, device=device, progress=False,
                       compile=compile)


# Fields a resumed cell must share with the checkpoint it resumes from (epochs may grow under the
# paper's stages; a cosine decay's horizon is fixed, see _check_resumable).
_RESUME_KEYS = ("objective", "num_particles", "batch_size", "lr", "lr_schedule", "schedule_scale", "adam_eps", "seed")


def _check_resumable(last: Path, config: TrainConfig) -> int:
    ckpt = load(last)
    old = ckpt["train_config"]
    keys = _RESUME_KEYS if config.lr_schedule == "iwae" else (*_RESUME_KEYS, "epochs")  # a decay's horizon is its shape
    diff = {k: (old.get(k), getattr(config, k)) for k in keys if old.get(k) != getattr(config, k)}
    if diff:
        raise ConfigError(f"{last.parent} holds a run with other settings {diff} (checkpoint vs now); "
                          "use another --out for another budget")
    return int(ckpt["epoch"])


# --- one cell --------------------------------------------------------------------------------


def run_cell(cell: Cell, budget: Budget, data, out_root: str | Path, *, binarization: str, data_spec: dict,
             device: torch.device | str = "cpu", eval_samples: int | None = None, eval_points: int | None = None,
             seed: int = 0, batch_size: int | None = None, compile: bool = False,
             log: Callable[[str], None] = print) -> dict:
    """Train (or resume) one cell in ``out_root/<binarization>/<cell>/``, evaluate it on the test
    set, write and return its ``result.json``. A cell whose result already matches the budget and
    evaluation settings is not touched."""
    cell_dir = Path(out_root) / binarization / cell.name
    eval_samples = eval_samples or budget.eval_samples
    eval_points = eval_points if eval_points is not None else budget.eval_points
    config = train_config(cell, budget, seed=seed, device=str(device), batch_size=batch_size, compile=compile)
    result_path = cell_dir / "result.json"
    done = finished_result(cell_dir, budget.name, config.epochs, eval_samples, eval_points)
    if done is not None:
        log(f"{binarization}/{cell.name}: done already (result.json)")
        return done
    last = cell_dir / "last.pt"
    resume = last.exists()
    start = _check_resumable(last, config) if resume else 0
    model, guide, mconfig = build("vae", data.x_dim, {"stochastic_layers": cell.layers}, seed=seed)
    meta = {"family": "vae", "model_options": {"stochastic_layers": cell.layers}, "x_dim": data.x_dim,
            "dataset": data_spec, "image_shape": list(data.image_shape), "likelihood": data.likelihood}
    log(f"{binarization}/{cell.name}: {cell.train_objective} k={cell.k}, {cell.layers} layer(s), "
        f"epochs {start}->{config.epochs} on {len(data)} images, device {device}")
    t0 = time.perf_counter()
    fit_result = fit(model, guide, data, config, out_dir=cell_dir, resume=resume, meta=meta,
                     callbacks=[keep_snapshots(cell_dir, budget.snapshots, model, guide)])
    history = fit_result.history
    x = data.test[:eval_points] if eval_points else data.test
    ev = evaluate_cell(model, guide, x.to(device), num_samples=eval_samples, seed=seed)
    result = {
        "cell": cell.name, "objective": cell.objective, "train_objective": cell.train_objective, "k": cell.k,
        "layers": cell.layers, "binarization": binarization, "budget": budget.name, "budget_description": budget.description,
        "epochs": config.epochs, "epochs_trained": len(history), "train_size": len(data), "batch_size": config.batch_size,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        # training seconds summed over every (resumed) session, from the per-epoch metrics
        "train_seconds": float(sum(h["time"] for h in history)),
        # CPU seconds of training (the trainer's per-epoch cpu_seconds; its wall "time" for epochs
        # recorded before that metric existed): what the CPU-hour budgets count
        "train_cpu_seconds": float(sum(h.get("cpu_seconds", h["time"]) for h in history)),
        "this_session_seconds": time.perf_counter() - t0,
        "eval_points": eval_points, "device": str(device), "torch_threads": torch.get_num_threads(),
        "z_dims": list(mconfig.z_dims), "active_units_str": None, **ev,
    }
    result["active_units_str"] = format_active(ev["active_units"], _site_order(cell.layers))
    result["wall_seconds"] = result["train_seconds"] + ev["eval_seconds"]
    write_json_atomic(result, result_path)
    log(f"{binarization}/{cell.name}: NLL {ev['nll']:.2f} +- {ev['nll_se']:.2f} (S={eval_samples}, {x.shape[0]} test points), "
        f"active units {result['active_units_str']}, {result['wall_seconds']:.1f} s")
    return result


def keep_snapshots(cell_dir: Path, epochs: tuple[int, ...], model, guide) -> Callable[[dict], None]:
    """A ``fit`` callback writing the weights after each of ``epochs`` to ``snapshots/epoch_N.pt``
    (atomically), with the training seconds so far, for the NLL-against-CPU-time study."""
    wanted = set(epochs)

    def callback(metrics: dict) -> None:
        if metrics["epoch"] in wanted:
            history = load(cell_dir / "last.pt")["history"]  # every session's epochs, resumes included
            save_atomic({"epoch": metrics["epoch"], "model_state": model.state_dict(), "guide_state": guide.state_dict(),
                         "train_seconds": float(sum(h["time"] for h in history))},
                        cell_dir / "snapshots" / f"epoch_{metrics['epoch']}.pt")

    return callback


def _site_order(layers: int) -> list[str]:
    from ppvae.models.vae import site_names

    return site_names(layers)


# --- the table -------------------------------------------------------------------------------

COLUMNS = ["binarization", "objective", "k", "layers", "our_nll", "our_nll_se", "paper_nll", "difference", "our_active_units",
           "paper_active_units", "epochs", "wall_seconds", "train_cpu_hours", "cell", "budget", "eval_points", "eval_samples"]


def collect_results(out_root: str | Path) -> dict[tuple[str, str], dict]:
    """Every ``<binarization>/<cell>/result.json`` under ``out_root``, keyed (binarization, cell)."""
    found = {}
    for path in sorted(Path(out_root).glob("*/*/result.json")):
        r = read_json(path)
        found[(r["binarization"], r["cell"])] = r
    return found


def table_rows(out_root: str | Path) -> list[dict]:
    """The 12 rows per binarization that has any result; cells not run yet have empty entries."""
    results = collect_results(out_root)
    rows = []
    for binarization in sorted({b for b, _ in results}):
        for objective, k, layers in ROWS:
            cell = cell_of_row(objective, k, layers)
            r = results.get((binarization, cell.name))
            paper = PAPER_NLL.get((binarization, objective, layers, k))
            ours = r["nll"] if r else None
            rows.append({
                "binarization": binarization, "objective": objective.upper(), "k": k, "layers": layers,
                "our_nll": ours, "our_nll_se": r["nll_se"] if r else None, "paper_nll": paper,
                "difference": (ours - paper) if ours is not None and paper is not None else None,
                "our_active_units": r["active_units_str"] if r else None,
                "paper_active_units": PAPER_ACTIVE_UNITS.get((binarization, objective, layers, k)),
                "epochs": r["epochs_trained"] if r else None, "wall_seconds": r["wall_seconds"] if r else None,
                "train_cpu_hours": r.get("train_cpu_seconds", r["train_seconds"]) / 3600 if r else None,
                "cell": cell.name, "budget": r["budget"] if r else None,
                "eval_points": (r["num_test"] if r else None), "eval_samples": (r["eval_samples"] if r else None),
            })
    return rows


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _signed(v: float | None) -> str:
    return "" if v is None else f"{v:+.2f}"


def render_markdown(rows: list[dict]) -> str:
    lines = [
        "# IWAE Table 1 (Burda et al. 2016): our runs vs the paper",
        "",
        budgets_line(rows, {r["budget"]: get_budget(r["budget"]) for r in rows if r["budget"]}, "Budget(s) of the runs below"),
        "NLL = -mean log p(x) on the test points (importance sampling, the paper used 5000 samples on all 10,000). "
        "At k=1 the VAE and IWAE objectives coincide: one run (cell k1-L*) fills both rows. "
        "Difference = ours - paper (positive: ours is worse). Active units: Cov_x(E_q[u|x]) > 1e-2, per "
        "stochastic layer bottom first; the paper's active-unit numbers are marked (check) in REFERENCE.md.",
        "",
        "| binarization | objective | k | layers | our NLL | paper NLL | difference | our active units | paper active units | epochs | wall time | test points x samples |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        test = f"{r['eval_points']} x {r['eval_samples']}" if r["eval_points"] else "not run"
        lines.append(
            f"| {r['binarization']} | {r['objective']} | {r['k']} | {r['layers']} | {_fmt(r['our_nll'])} | {_fmt(r['paper_nll'])} "
            f"| {_signed(r['difference'])} | {r['our_active_units'] or ''} "
            f"| {r['paper_active_units'] or ''} | {_fmt(r['epochs'])} | {format_duration(r['wall_seconds'])} | {test} |"
        )
    return "\n".join(lines) + "\n"


def write_table(out_root: str | Path) -> list[dict]:
    """Rebuild ``table.md`` and ``table.csv`` in ``out_root`` from all results present."""
    return write_result_tables(out_root, table_rows(out_root), render_markdown, COLUMNS, "<binarization>/<cell>")


def run_table1(cells: Iterable[Cell], budget: Budget, data, out_root: str | Path, **kwargs) -> list[dict]:
    """Run ``cells`` one after the other, then rebuild the table; returns the cells' results."""
    out_root = Path(out_root)
    results = [run_cell(c, budget, data, out_root, **kwargs) for c in cells]
    write_table(out_root)
    return results


def budget_summary(budget: Budget) -> dict:
    return {**asdict(budget), "epochs": budget.epochs, "stages": burda_stages(budget.schedule_scale)}
