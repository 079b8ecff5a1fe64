"""``docs/results/prior_comparison.csv``: one row per cell of the learned-prior comparison.

    python -m ppvae.experiments.prior_comparison_csv OUT [--csv docs/results/prior_comparison.csv] [--merge]

OUT is the folder of ``ppvae reproduce iop-comparison`` (cells ``OUT/<dataset>/<prior>/``). Columns:
``log_px_k5000`` and ``log_px_k10``, the cell's test log p(x) at the harness's large k (5000 at the
medium and paper budgets) and at k = 10, with the prior as trained (for the IOP: unnormalized);
``log_z``, the IOP prior's log normalizer by annealed importance sampling, read from
``log_z_ais.json`` that ``python -m ppvae.experiments.iop_log_z CELL --method ais --save`` writes
(empty for the other priors, and for an IOP cell without that file: the harness's importance-sampling
estimate is not a substitute, see docs/iop_comparison.md); ``epochs``, the epochs trained;
``cpu_hours``, the training's process CPU time (the trainer's per-epoch ``cpu_seconds`` in
``metrics.jsonl``, summed: ELBO steps, the IOP's T epochs, validation; not the evaluation), which
unlike wall time is not inflated by other jobs on a shared machine; ``budget`` and ``test_points``,
the harness budget and the number of test points scored (the cells of one CSV may come from
different runs). ``--merge`` keeps the rows of an existing CSV for the cells OUT does not hold
(e.g. Frey Face from one run, MNIST from another); without it the CSV is OUT's cells alone.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from ppvae.errors import ConfigError
from ppvae.experiments.iop_log_z import AIS_FILE
from ppvae.reproduce.common import read_json, render_csv
from ppvae.reproduce.iop_comparison import DATASETS, PRIORS

COLUMNS = ["dataset", "prior", "log_px_k5000", "log_px_k10", "log_z", "epochs", "cpu_hours", "budget", "test_points"]


def cpu_hours(cell: Path) -> float | None:
    """Summed ``cpu_seconds`` of the cell's epochs in hours; None when no epoch recorded it."""
    path = cell / "metrics.jsonl"
    if not path.exists():
        return None
    seconds = [json.loads(line).get("cpu_seconds") for line in path.read_text().splitlines() if line.strip()]
    seconds = [s for s in seconds if s is not None]
    return round(sum(seconds) / 3600, 3) if seconds else None


def rows(out_root: str | Path) -> list[dict]:
    """The cells with a ``result.json``, in the comparison's order."""
    out = []
    for dataset in DATASETS:
        for prior in PRIORS:
            cell = Path(out_root) / dataset / prior
            if not (cell / "result.json").exists():
                continue
            r = read_json(cell / "result.json")
            if r.get("eval_samples") != 5000:
                raise ConfigError(f"{cell} was evaluated with k={r.get('eval_samples')}, not 5000: "
                                  "the log_px_k5000 column needs the medium or paper budget")
            ais = cell / AIS_FILE
            out.append({"dataset": dataset, "prior": prior, "log_px_k5000": round(r["ll"], 2),
                        "log_px_k10": round(r["ll_k10"], 2),
                        "log_z": round(read_json(ais)["log_z"], 3) if ais.exists() else None,
                        "epochs": r["epochs_trained"], "cpu_hours": cpu_hours(cell), "budget": r.get("budget"),
                        "test_points": r.get("num_test")})
    return out


def merged(new: list[dict], csv_path: Path) -> list[dict]:
    """``new`` plus the rows of ``csv_path`` for the other cells, in the comparison's order."""
    have = {(r["dataset"], r["prior"]) for r in new}
    old = [r for r in csv.DictReader(csv_path.open())] if csv_path.exists() else []
    keep = [{c: (r.get(c) or None) for c in COLUMNS} for r in old if (r["dataset"], r["prior"]) not in have]
    order = {(d, p): i for i, (d, p) in enumerate((d, p) for d in DATASETS for p in PRIORS)}
    return sorted(new + keep, key=lambda r: order.get((r["dataset"], r["prior"]), len(order)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the --out folder of ppvae reproduce iop-comparison")
    p.add_argument("--csv", default="docs/results/prior_comparison.csv")
    p.add_argument("--merge", action="store_true", help="keep the CSV's rows of cells that OUT does not hold")
    args = p.parse_args(argv)
    found = rows(args.out)
    if not found:
        raise ConfigError(f"no cell result.json under {args.out}/<dataset>/<prior>/")
    if args.merge:
        found = merged(found, Path(args.csv))
    Path(args.csv).write_text(render_csv(found, COLUMNS))
    print(render_csv(found, COLUMNS), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
