"""Encoder depth 1-4 and tanh vs ReLU vs sigmoid (the AEVB report, sections 4.3 and 4.5), on MNIST:

    python -m ppvae.experiments.aevb_architecture --budget full --out runs/aevb

Depth: z = 10, a decoder with one hidden layer of 500 tanh units, an encoder with 1 to 4 hidden
layers of 500 tanh units. Activations: z = 10, one hidden layer of 500 units in encoder and
decoder, each activation in both. Every model: estimator B (``elbo-analytic``), one sample, batch
100, Adam 1e-3, the same epochs on the same data. Reported: the validation ELBO per epoch (the
figures), the final training and test ELBO, and seconds per epoch, as CPU time of the process
(the trainer's ``cpu_seconds``: not inflated by other jobs on a shared machine), training steps
and validation together.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from ppvae.experiments.aevb_common import (experiment_parser, parse_experiment_args, save_figure, eval_split, build_vae, check_budget, default_data_root, load, machine, mean_bound, train,
                                          vae_meta, write_json)

Z_DIM, WIDTH = 10, 500
DEPTHS = (1, 2, 3, 4)
ACTIVATIONS = ("tanh", "relu", "sigmoid")


@dataclass(frozen=True)
class Budget:
    limit: int | None
    valid_size: int | None
    epochs: int


BUDGETS = {"quick": Budget(300, None, 2), "full": Budget(10_000, 2_000, 30)}


def run(budget: str = "quick", out: str | Path = "runs/aevb", data_root: str | None = None, seed: int = 0,
        parts: tuple[str, ...] = ("depth", "activation")) -> dict:
    b = BUDGETS[check_budget(budget)]
    out = Path(out) / "architecture"
    data = load("mnist", data_root or default_data_root(), limit=b.limit, quick=budget == "quick", valid_size=b.valid_size)
    test = data.test  # all of it: MNIST's first 5,000 test digits are the cleaner half
    results = {"budget": budget, "machine": machine(), "dataset": data.name, "train_size": len(data),
               "epochs": b.epochs, "z_dim": Z_DIM, "width": WIDTH, "depth": {}, "activation": {}}
    runs = []
    if "depth" in parts:
        runs += [("depth", d, f"depth{d}", [WIDTH] * d, [WIDTH], "tanh") for d in DEPTHS]
    if "activation" in parts:
        runs += [("activation", a, a, [WIDTH], [WIDTH], a) for a in ACTIVATIONS]
    for part, key, name, enc, dec, act in runs:
        if part == "activation" and act == "tanh" and "depth" in parts:
            src = results["depth"][1]  # the same model as depth 1: reuse it
            results["activation"]["tanh"] = src
            continue
        model, guide = build_vae(data.x_dim, Z_DIM, enc, dec, activation=act, likelihood=data.likelihood, seed=seed)
        t = train(name, model, guide, data, out, epochs=b.epochs, batch_size=100, lr=1e-3, objective="elbo-analytic",
                  seed=seed, meta=vae_meta(data, Z_DIM, dec, act))
        torch.manual_seed(seed)
        results[part][key] = {
            "encoder_hidden": enc, "decoder_hidden": dec, "activation": act, "epochs": len(t.history),
            "valid_curve": [h[next(k for k in h if k.startswith("valid_"))] for h in t.history],
            "train_elbo": mean_bound(t.model, t.guide, eval_split(data, "train", 5000)), "test_elbo": mean_bound(t.model, t.guide, test),
            "cpu_s_per_epoch": statistics.median(h["cpu_seconds"] for h in t.history),
            "wall_s": t.wall_s, "cpu_s": t.cpu_s,
        }
        r = results[part][key]
        print(f"{part} {key}: test ELBO {r['test_elbo']:.2f}, {r['cpu_s_per_epoch']:.2f} CPU s/epoch", flush=True)
    for part in parts:
        curves(results[part], out / f"{part}_curves.png", part, b.epochs, len(data))
    write_json(out / "results.json", results)
    return results


def curves(runs: dict, path: Path, part: str, epochs: int, n: int) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.0), dpi=100)
    ax, bx = fig.subplots(1, 2)
    for key, r in runs.items():
        label = f"{key} hidden layer{'s' if key != 1 else ''} in the encoder" if part == "depth" else key
        ax.plot(range(1, len(r["valid_curve"]) + 1), r["valid_curve"], marker=".", label=label)
    ys = [y for r in runs.values() for y in r["valid_curve"][len(r["valid_curve"]) // 4:]]
    lo, hi = min(ys), max(ys)
    ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))  # the first epochs are off-scale
    ax.set_xlabel(f"epoch ({n:,} training images)")
    ax.set_ylabel("validation ELBO (nats / datapoint)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    keys = list(runs)
    bx.bar([str(k) for k in keys], [runs[k]["cpu_s_per_epoch"] for k in keys], color="tab:gray")
    bx.set_ylabel("CPU seconds per epoch (1 thread)")
    bx.set_xlabel("encoder hidden layers" if part == "depth" else "activation")
    for i, k in enumerate(keys):
        bx.text(i, runs[k]["cpu_s_per_epoch"], f"{runs[k]['cpu_s_per_epoch']:.2f}", ha="center", va="bottom", fontsize="small")
    return save_figure(fig, path)


def main(argv=None) -> int:
    p = experiment_parser("ppvae.experiments.aevb_architecture", __doc__)
    p.add_argument("--parts", default="depth,activation")
    args = parse_experiment_args(p, argv)
    run(args.budget, args.out, args.data_root, args.seed, tuple(args.parts.split(",")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
