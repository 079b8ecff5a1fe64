"""Test NLL against CPU-hours from the snapshots of `ppvae reproduce iwae-table1 --budget fast`.

    python -m ppvae.experiments.iwae_snapshots RUNS/iwae-fast --points 1000 --samples 5000 \\
        --csv docs/results/iwae_fast_snapshots.csv --figure docs/figures/iwae_fast_nll_vs_cpu.png

The ``fast`` budget keeps each cell's weights after epochs 10, 25, ..., 2000
(``OUT/<binarization>/<cell>/snapshots/epoch_N.pt``). For every snapshot this scores the first
``--points`` test digits (the harness's test set: MNIST test binarized once with the run's seed) by
importance sampling with ``--samples`` samples each (``ppvae.log_likelihood``, seeded), and puts
the NLL, its standard error over the test points and the share of points with Pareto-k > 0.7
beside the CPU-hours the cell had trained for by then (the sum of the trainer's per-epoch
``cpu_seconds``, one thread; evaluation not included). Each snapshot's result is cached next to it
(``epoch_N.nll.json``, keyed by the settings; epochs trained before the trainer recorded
``cpu_seconds`` count at the cell's median epoch), so the command can be rerun as snapshots appear.
The figure draws NLL against CPU-hours per cell with the paper's figures as dashed lines; the CSV
has columns cell, epoch, cpu_hours, nll, nll_se, points, samples, pareto_k_share.

An NLL on the first 1000 test points is not the paper's all-10,000 figure: it says how fast a
schedule gets where, and the cell's own final evaluation (all points, k=5000) is the number that
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
from ppvae.reproduce.iwae_table1 import parse_cells
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
def score_snapshot(path: Path, x: torch.Tensor, samples: int, seed: int = 0) -> dict:
    """NLL of the snapshot's pair on ``x`` (cached next to the snapshot for these settings)."""
    cache = path.with_suffix(".nll.json")
    key = {"points": int(x.shape[0]), "samples": int(samples), "seed": int(seed)}
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("settings") == key:
            return cached
    meta = load(path.parent.parent / "last.pt")["meta"]
    model, guide, _ = ppvae.build(meta["family"], meta["x_dim"], meta.get("model_options"))
    snap = load(path)
    model.load_state_dict(snap["model_state"])
    guide.load_state_dict(snap["guide_state"])
    model.eval(), guide.eval()
    res = ppvae.log_likelihood(model, guide, x, num_samples=samples, seed=seed, diagnostics=True)
    nll, se = mean_and_se(-res.log_px)
    out = {"settings": key, "epoch": int(snap["epoch"]), "nll": nll, "nll_se": se,
           "pareto_k_share": float((res.pareto_k > 0.7).double().mean())}
    cache.write_text(json.dumps(out, indent=1))
    return out


def collect(out: Path, points: int, samples: int, seed: int, binarization: str = "dynamic") -> list[dict]:
    rows = []
    for cell_dir in sorted(p for p in (out / binarization).glob("*") if (p / "snapshots").is_dir()):
        meta = load(cell_dir / "last.pt")["meta"]
        spec = meta["dataset"]
        x = load_iwae_data(binarization, spec.get("root"), None, seed=spec.get("seed", 0)).test[:points]
        snaps = sorted(cell_dir.glob("snapshots/epoch_*.pt"), key=lambda p: int(SNAPSHOT.search(p.name).group(1)))
        for path in snaps:
            r = score_snapshot(path, x, samples, seed)
            rows.append({"cell": cell_dir.name, "epoch": r["epoch"], "cpu_hours": round(cpu_hours_at(cell_dir, r["epoch"]), 6),
                         "nll": round(r["nll"], 3), "nll_se": round(r["nll_se"], 3), "points": points, "samples": samples,
                         "pareto_k_share": round(r["pareto_k_share"], 4)})
            print(f"{cell_dir.name} epoch {r['epoch']}: NLL {r['nll']:.2f} +- {r['nll_se']:.2f} "
                  f"after {rows[-1]['cpu_hours']:.2f} CPU-h (Pareto-k > 0.7: {100 * r['pareto_k_share']:.1f}%)", flush=True)
    return rows


def save_nll_figure(rows: list[dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, cell in enumerate(sorted({r["cell"] for r in rows})):
        pts = [r for r in rows if r["cell"] == cell]
        colour = f"C{i}"
        ax.errorbar([r["cpu_hours"] for r in pts], [r["nll"] for r in pts], yerr=[r["nll_se"] for r in pts],
                    marker="o", color=colour, label=f"{cell} (fast budget)")
        c = parse_cells(cell)[0]
        paper = PAPER_NLL.get(("dynamic", "vae" if c.objective == "both" else c.objective, c.layers, c.k))
        if paper is not None:
            ax.axhline(paper, color=colour, linestyle="--", linewidth=1, label=f"{cell}: paper {paper:.2f}")
    if all(r["cpu_hours"] > 0 for r in rows):  # log: the snapshots are spread over decades
        ax.set_xscale("log")
    ax.set_xlabel("CPU-hours of training (one thread)")
    ax.set_ylabel(f"test NLL (nats), first {rows[0]['points']} test digits, k={rows[0]['samples']}")
    ax.set_title("IWAE Table 1 one-layer cells under the fast budget")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return plots.save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ppvae.experiments.iwae_snapshots", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the --out folder of `ppvae reproduce iwae-table1 --budget fast`")
    p.add_argument("--points", type=int, default=1000, help="first N test digits (default 1000)")
    p.add_argument("--samples", type=int, default=5000, help="importance samples per digit (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv", type=Path, default=None)
    p.add_argument("--figure", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.out / "dynamic").is_dir():
        raise SystemExit(f"{args.out} holds no dynamic/<cell>/ folders: give the --out of a `--budget fast` run")
    rows = collect(args.out, args.points, args.samples, args.seed)
    if not rows:
        raise SystemExit(f"no snapshots under {args.out}/dynamic/*/snapshots yet")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.csv}")
    if args.figure:
        print(f"wrote {save_nll_figure(rows, args.figure)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
