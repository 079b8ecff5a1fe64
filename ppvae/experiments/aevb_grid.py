"""Samples per datapoint L against minibatch size M on Frey Face (the AEVB report, section 4.2):

    python -m ppvae.experiments.aevb_grid --budget full --out runs/aevb

Kingma & Welling (2014) state that L = 1 suffices when M is large enough (e.g. 100), without
showing it. Here one VAE per (L, M) cell (z = 5, 200 tanh hidden units, Gaussian decoder with
learned variance, estimator B = ``elbo-analytic`` with L samples) is trained for the same number
of epochs (passes over the data, as in the report; a large M then takes fewer steps), and each
model's ELBO is measured on the training and test sets with the same estimator (10 samples per
datapoint, to keep the measurement's own noise small). The two heatmaps are the report's Figure 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppvae.experiments.aevb_common import (experiment_parser, parse_experiment_args, save_figure, build_vae, check_budget, default_data_root, load, machine, mean_bound, train,
                                          vae_meta, write_json)


@dataclass(frozen=True)
class Budget:
    samples: tuple[int, ...]
    batches: tuple[int, ...]
    epochs: int
    limit: int | None


BUDGETS = {"quick": Budget((1, 2), (20, 100), 2, 300), "full": Budget((1, 2, 4, 8), (20, 60, 100, 140), 80, None)}
Z_DIM, HIDDEN = 5, 200


def run(budget: str = "quick", out: str | Path = "runs/aevb", data_root: str | None = None, seed: int = 0) -> dict:
    b = BUDGETS[check_budget(budget)]
    out = Path(out) / "grid"
    data = load("frey-face", data_root or default_data_root(), limit=b.limit, quick=budget == "quick")
    cells = {}
    for L in b.samples:
        for M in b.batches:
            name = f"L{L}_M{M}"
            model, guide = build_vae(data.x_dim, Z_DIM, [HIDDEN], likelihood=data.likelihood, seed=seed)
            t = train(name, model, guide, data, out, epochs=b.epochs, batch_size=M, lr=1e-3, objective="elbo-analytic",
                      num_particles=L, valid_particles=10, seed=seed, meta=vae_meta(data, Z_DIM, [HIDDEN]))
            torch.manual_seed(seed)
            cells[name] = {"L": L, "M": M, "epochs": len(t.history),
                           "train_elbo": mean_bound(t.model, t.guide, data.train, particles=10),
                           "test_elbo": mean_bound(t.model, t.guide, data.test, particles=10),
                           "steps": len(t.history) * -(-len(data) // M), "wall_s": t.wall_s, "cpu_s": t.cpu_s}
            print(f"{name}: train {cells[name]['train_elbo']:.1f}, test {cells[name]['test_elbo']:.1f} "
                  f"({t.cpu_s:.0f} CPU s)", flush=True)
    results = {"budget": budget, "machine": machine(), "dataset": data.name, "epochs": b.epochs, "z_dim": Z_DIM,
               "hidden": HIDDEN, "cells": cells}
    heatmaps(cells, b.samples, b.batches, out / "grid_heatmaps.png", b.epochs)
    write_json(out / "results.json", results)
    return results


def heatmaps(cells: dict, samples, batches, path: Path, epochs: int) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.5, 4.2), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, split in zip(axes, ("train", "test")):
        grid = np.array([[cells[f"L{L}_M{M}"][f"{split}_elbo"] for M in batches] for L in samples])
        im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        ax.set_xticks(range(len(batches)), [str(m) for m in batches])
        ax.set_yticks(range(len(samples)), [str(s) for s in samples])
        ax.set_xlabel("minibatch size M")
        ax.set_ylabel("samples per datapoint L")
        ax.set_title(f"{split} ELBO (nats / datapoint)", fontsize="medium")
        best = np.unravel_index(np.argmax(grid), grid.shape)
        for i in range(len(samples)):
            for j in range(len(batches)):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize="small",
                        color="k" if grid[i, j] > grid.mean() else "w", fontweight="bold" if (i, j) == best else None)
        fig.colorbar(im, ax=ax)
    fig.suptitle(f"Frey Face, {epochs} epochs per cell (equal passes over the data)")
    return save_figure(fig, path)


def main(argv=None) -> int:
    p = experiment_parser("ppvae.experiments.aevb_grid", __doc__)
    args = parse_experiment_args(p, argv)
    run(args.budget, args.out, args.data_root, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
