"""Test NLL against CPU-hours from the snapshots of `ppvae reproduce iwae-table1 --budget fast` (or
``fast-N``), one curve per cell and schedule.

    python -m ppvae.experiments.iwae_snapshots RUNS/iwae-fast RUNS/iwae-fast600 --points 500 --samples 5000 \\
        --include docs/results/iwae_fast_snapshots.csv \\
        --csv docs/results/iwae_fast_snapshots.csv --figure docs/figures/iwae_fast_nll_vs_cpu.png

The fast budgets keep each cell's weights after epochs 10, 25, ..., 2000 that fall inside the
schedule (``OUT/<binarization>/<cell>/snapshots/epoch_N.pt``); a finished cell adds its final
weights (``last.pt``). For every snapshot this scores the first ``--points`` test digits (the
harness's test set: MNIST test binarized once with the run's seed) by importance sampling with
``--samples`` samples each (``ppvae.log_likelihood``, seeded), and puts the NLL, its standard error
over the test points and the share of points with Pareto-k > 0.7 beside the CPU-hours the cell had
trained for by then (the sum of the trainer's per-epoch ``cpu_seconds``, one thread; evaluation
not included). Each snapshot's result is cached next to it (``epoch_N.nll.json``, keyed by the
settings; epochs trained before the trainer recorded ``cpu_seconds`` count at the cell's median
epoch), so the command can be rerun as snapshots appear. ``--include`` adds rows of an earlier CSV
of this command (runs whose folders are gone) to the figure and the CSV, unless a run given here
has the same cell, schedule and epoch. The figure draws NLL against CPU-hours per cell (colour)
and schedule (marker), with the paper's figures as dashed lines; the CSV has columns cell,
schedule, epoch, cpu_hours, nll, nll_se, points, samples, pareto_k_share.

An NLL on the first points of the test set is not the paper's all-10,000 figure: it says how fast
a schedule gets where, and the cell's own final evaluation (all points, k=5000) is the number that
goes in the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import torch

import ppvae
from ppvae import plots
from ppvae.checkpoint import load
from ppvae.evaluate import mean_and_se
from ppvae.reproduce.common import load_iwae_data
from ppvae.reproduce.iwae_table1 import fast_budget, parse_cells
from ppvae.reproduce.paper_numbers import PAPER_NLL

SNAPSHOT = re.compile(r"epoch_(\d+)\.pt$")


def cpu_hours_at(cell_dir: Path, epoch: int) -> float:
    """CPU-hours of training up to and including ``epoch``, from the cell's metrics file. Epochs
    trained before the trainer recorded ``cpu_seconds`` count at the cell's median epoch (their
    wall ``time`` was taken on a shared machine and would overstate them)."""
    rows = [json.loads(line) for line in (cell_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    known = sorted(r["cpu_seconds"] for r in rows if "cpu_seconds" in r)
    median = known[len(known) // 2] if known else 0.0
    return sum(r.get("cpu_seconds", median) for r in rows if r["epoch"] <= epoch) / 3600


@torch.no_grad()
def score_snapshot(path: Path, meta: dict, x: torch.Tensor, samples: int, seed: int = 0) -> dict:
    """NLL of the snapshot's pair (built from the cell's ``meta``) on ``x``, cached next to the
    snapshot for these settings."""
    cache = path.with_suffix(".nll.json")
    snap = load(path)
    key = {"points": int(x.shape[0]), "samples": int(samples), "seed": int(seed), "epoch": int(snap["epoch"])}
    if cache.exists():
        cached = json.loads(cache.read_text())
        if {**cached.get("settings", {}), "epoch": cached.get("epoch")} == key:
            return cached
    model, guide, _ = ppvae.build(meta["family"], meta["x_dim"], meta.get("model_options"))
    model.load_state_dict(snap["model_state"])
    guide.load_state_dict(snap["guide_state"])
    model.eval(), guide.eval()
    res = ppvae.log_likelihood(model, guide, x, num_samples=samples, seed=seed, diagnostics=True)
    nll, se = mean_and_se(-res.log_px)
    out = {"settings": {k: v for k, v in key.items() if k != "epoch"}, "epoch": key["epoch"], "nll": nll, "nll_se": se,
           "pareto_k_share": float((res.pareto_k > 0.7).double().mean())}
    cache.write_text(json.dumps(out, indent=1))
    return out


def schedule_of(cell_dir: Path, ckpt: dict) -> tuple[str, bool]:
    """The cell's schedule name (``fast``, ``fast-600``, or its budget's name) and whether it has
    trained all of it, from its ``last.pt`` (``ckpt``)."""
    cfg = ckpt["train_config"]
    finished = int(ckpt["epoch"]) >= int(cfg["epochs"])
    if (cell_dir / "result.json").exists():
        return json.loads((cell_dir / "result.json").read_text())["budget"], finished
    if cfg["lr_schedule"] == "cosine":
        return fast_budget(int(cfg["epochs"])).name, finished
    return f"{cfg['lr_schedule']} schedule, {cfg['epochs']} epochs", finished


def collect(out: Path, points: int, samples: int, seed: int, binarization: str = "dynamic") -> list[dict]:
    rows = []
    for cell_dir in sorted(p for p in (out / binarization).glob("*") if (p / "snapshots").is_dir()):
        last = load(cell_dir / "last.pt")  # read once: meta, schedule and final epoch
        spec = last["meta"]["dataset"]
        x = load_iwae_data(binarization, spec.get("root"), None, seed=spec.get("seed", 0)).test[:points]
        schedule, finished = schedule_of(cell_dir, last)
        snaps = sorted(cell_dir.glob("snapshots/epoch_*.pt"), key=lambda p: int(SNAPSHOT.search(p.name).group(1)))
        taken = {int(SNAPSHOT.search(p.name).group(1)) for p in snaps}
        for path in snaps + ([cell_dir / "last.pt"] if finished and int(last["epoch"]) not in taken else []):
            r = score_snapshot(path, last["meta"], x, samples, seed)
            rows.append({"cell": cell_dir.name, "schedule": schedule, "epoch": r["epoch"],
                         "cpu_hours": round(cpu_hours_at(cell_dir, r["epoch"]), 6), "nll": round(r["nll"], 3),
                         "nll_se": round(r["nll_se"], 3), "points": points, "samples": samples,
                         "pareto_k_share": round(r["pareto_k_share"], 4)})
            print(f"{cell_dir.name} ({schedule}) epoch {r['epoch']}: NLL {r['nll']:.2f} +- {r['nll_se']:.2f} "
                  f"after {rows[-1]['cpu_hours']:.2f} CPU-h (Pareto-k > 0.7: {100 * r['pareto_k_share']:.1f}%)", flush=True)
    return rows


def read_rows(path: Path, default_schedule: str = "fast") -> list[dict]:
    """Rows of an earlier CSV of this command (older ones have no schedule column: ``fast``)."""
    rows = []
    for r in csv.DictReader(open(path)):
        rows.append({"cell": r["cell"], "schedule": r.get("schedule") or default_schedule, "epoch": int(r["epoch"]),
                     "cpu_hours": float(r["cpu_hours"]), "nll": float(r["nll"]), "nll_se": float(r["nll_se"]),
                     "points": int(r["points"]), "samples": int(r["samples"]), "pareto_k_share": float(r["pareto_k_share"])})
    return rows


def final_results(out: Path, binarization: str = "dynamic") -> list[dict]:
    """Each finished cell's own evaluation (``result.json``: all its test points) at its training
    CPU-hours, for the figure beside the snapshot curves."""
    finals = []
    for path in sorted((out / binarization).glob("*/result.json")):
        r = json.loads(path.read_text())
        finals.append({"cell": r["cell"], "schedule": r["budget"], "nll": r["nll"], "nll_se": r["nll_se"],
                       "points": r["num_test"], "cpu_hours": cpu_hours_at(path.parent, r["epochs_trained"])})
    return finals


def read_finals(path: Path) -> list[dict]:
    """The `fast` rows of ``docs/results/iwae_table1.csv`` (each cell's own all-points evaluation
    and training CPU-hours) as stars for the figure: they outlive the run folders."""
    finals = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("budget", "").startswith("fast") and r.get("binarization", "dynamic") == "dynamic" and r.get("nll"):
                finals.append({"cell": r["cell"], "schedule": r["budget"], "nll": float(r["nll"]), "nll_se": float(r["nll_se"]),
                               "points": 10_000, "cpu_hours": float(r["cpu_hours"])})
    return finals


def save_nll_figure(rows: list[dict], path: Path, finals: list[dict] = ()) -> Path:
    """Left: every snapshot; right: the same from 0.2 CPU-hours on, where the schedules and the
    final evaluations (stars) are told apart; one legend beside both."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 5.5), dpi=100)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    cells = sorted({r["cell"] for r in rows})
    schedules = sorted({r["schedule"] for r in rows}, key=lambda s: (len(s), s))
    markers = "osD^v<>p"
    zoom = 0.2  # CPU-hours where the right panel starts
    for ax in axes:
        for i, cell in enumerate(cells):
            colour = f"C{i}"
            for j, schedule in enumerate(schedules):
                pts = sorted((r for r in rows if r["cell"] == cell and r["schedule"] == schedule), key=lambda r: r["epoch"])
                if ax is axes[1]:
                    pts = [r for r in pts if r["cpu_hours"] >= zoom]
                if pts:
                    ax.errorbar([r["cpu_hours"] for r in pts], [r["nll"] for r in pts], yerr=[r["nll_se"] for r in pts],
                                marker=markers[j % len(markers)], color=colour, alpha=0.85, capsize=2,
                                label=f"{cell}, {schedule} (last epoch {pts[-1]['epoch']})")
            for f in (f for f in finals if f["cell"] == cell):
                ax.errorbar([f["cpu_hours"]], [f["nll"]], yerr=[f["nll_se"]], marker="*", markersize=12, color=colour,
                            linestyle="none", label=f"{cell}, {f['schedule']}: all {f['points']:,} test digits")
            c = parse_cells(cell)[0]
            paper = PAPER_NLL.get(("dynamic", "vae" if c.objective == "both" else c.objective, c.layers, c.k))
            if paper is not None:
                ax.axhline(paper, color=colour, linestyle="--", linewidth=1, label=f"{cell}: paper {paper:.2f} (all 10,000)")
        if all(r["cpu_hours"] > 0 for r in rows):  # log: the snapshots are spread over decades
            ax.set_xscale("log")
        ax.set_xlabel("CPU-hours of training (one thread)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"test NLL (nats), k={rows[0]['samples']}; curves: first {rows[0]['points']} test digits")
    axes[0].set_title("every snapshot", fontsize="medium")
    axes[1].set_title(f"from {zoom} CPU-hours on", fontsize="medium")
    if axes[1].get_xscale() == "log":  # plain labels: the default minor ones overlap on a short decade
        from matplotlib.ticker import FormatStrFormatter, NullFormatter

        top = max([r["cpu_hours"] for r in rows] + [f["cpu_hours"] for f in finals])
        axes[1].set_xticks([t for t in (0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20) if t <= 1.2 * top])
        axes[1].xaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes[1].xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle("IWAE Table 1 one-layer cells: NLL against CPU-hours per schedule")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize="small", loc="center left", bbox_to_anchor=(0.70, 0.5))
    fig.tight_layout(rect=(0, 0, 0.70, 1))
    return plots.save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ppvae.experiments.iwae_snapshots", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, nargs="+", help="--out folders of `ppvae reproduce iwae-table1 --budget fast[-N]`")
    p.add_argument("--points", type=int, default=1000, help="first N test digits (default 1000)")
    p.add_argument("--samples", type=int, default=5000, help="importance samples per digit (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--include", type=Path, default=None, help="an earlier CSV of this command: its rows join the figure and the CSV")
    p.add_argument("--finals", type=Path, default=None,
                   help="docs/results/iwae_table1.csv: its fast-budget rows (all 10,000 digits) join the figure as stars")
    p.add_argument("--csv", type=Path, default=None)
    p.add_argument("--figure", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for out in args.out:
        if not (out / "dynamic").is_dir():
            raise SystemExit(f"{out} holds no dynamic/<cell>/ folders: give the --out of a `--budget fast` run")
    included = read_rows(args.include) if args.include else []  # read before --csv may overwrite it
    rows = [r for out in args.out for r in collect(out, args.points, args.samples, args.seed)]
    if not rows:
        raise SystemExit(f"no snapshots under {', '.join(f'{o}/dynamic/*/snapshots' for o in args.out)} yet")
    if any((r["points"], r["samples"]) != (rows[0]["points"], rows[0]["samples"]) for r in included):
        raise SystemExit(f"{args.include} was scored with other --points/--samples: its rows are not comparable")
    have = {(r["cell"], r["schedule"], r["epoch"]) for r in rows}
    rows = sorted(rows + [r for r in included if (r["cell"], r["schedule"], r["epoch"]) not in have],
                  key=lambda r: (r["cell"], r["schedule"], r["epoch"]))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.csv}")
    if args.figure:
        finals = [f for out in args.out for f in final_results(out)]
        if args.finals:  # a finished cell's own result.json wins over its CSV row
            have = {(f["cell"], f["schedule"]) for f in finals}
            finals += [f for f in read_finals(args.finals) if (f["cell"], f["schedule"]) not in have]
        print(f"wrote {save_nll_figure(rows, args.figure, finals)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
