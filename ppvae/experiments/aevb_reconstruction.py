"""VAE against the plain autoencoder: reconstruction mean squared error for latent sizes 2, 10 and 20
on MNIST and Frey Face (the AEVB report, section 5):

    python -m ppvae.experiments.aevb_reconstruction --budget full --out runs/aevb

Same architecture for all (one hidden layer of tanh units in encoder and decoder: 500 on MNIST, 200
on Frey Face), the same optimizer, epochs and weight decay (lambda = 1: Adam's L2 term, i.e.
(1/2)|theta|^2 added to the dataset-summed loss, a N(0, 1) prior on every weight in MAP form).
Models:

- ``vae``: the VAE, trained with the analytic-KL ELBO (Bernoulli decoder on MNIST, Gaussian with
  learned variance on Frey Face); its reconstruction decodes the posterior mean E_q[z | x] (the
  report found the mean 0.2% better than averaging decoded samples);
- ``ae``: the autoencoder (``ae`` family) trained on squared error, the criterion reported;
- ``ae-xent`` (MNIST only): the autoencoder trained on cross-entropy, the VAE's reconstruction
  loss, to separate the effect of the loss from the effect of the variational treatment.

The MSE is per pixel, over the test set (MNIST: binarized once, the targets every model saw the
like of in training). Written to ``aevb_mse.csv`` (dataset, z_dim, model, mse).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import ppvae
from ppvae.experiments.aevb_common import (experiment_parser, parse_experiment_args, save_figure, build_vae, check_budget, default_data_root, load, machine, train, vae_meta,
                                          write_csv, write_json)
from ppvae.plots import save_reconstructions

CSV_COLUMNS = ("dataset", "z_dim", "model", "mse")
WEIGHT_DECAY = 1.0
HIDDEN = {"mnist": 500, "frey-face": 200}


@dataclass(frozen=True)
class Budget:
    z_dims: tuple[int, ...]
    mnist_limit: int | None
    mnist_valid: int | None
    mnist_epochs: int
    frey_epochs: int


BUDGETS = {"quick": Budget((2, 10), 300, None, 2, 3), "full": Budget((2, 10, 20), 10_000, 2_000, 30, 300)}


@torch.no_grad()
def reconstruction(model, guide, x: torch.Tensor) -> torch.Tensor:
    """The decoder's mean at the encoder's code: g(f(x)) for the autoencoder, the mean of
    p(x | z = E_q[z | x]) for the VAE."""
    return model.decode(guide.encode(x))


def run(budget: str = "quick", out: str | Path = "runs/aevb", data_root: str | None = None, seed: int = 0) -> dict:
    b = BUDGETS[check_budget(budget)]
    out = Path(out) / "reconstruction"
    root = data_root or default_data_root()
    rows, models = [], {}
    for dataset in ("mnist", "frey-face"):
        if dataset == "mnist":
            data = load("mnist", root, limit=b.mnist_limit, quick=budget == "quick", valid_size=b.mnist_valid)
            epochs = b.mnist_epochs
        else:
            data = load("frey-face", root, limit=300 if budget == "quick" else None, quick=budget == "quick")
            epochs = b.frey_epochs
        hidden = HIDDEN[dataset]
        x = data.test
        kinds = ("vae", "ae", "ae-xent") if data.likelihood == "bernoulli" else ("vae", "ae")
        for z in b.z_dims:
            recs = {}
            for kind in kinds:
                name = f"{dataset}_z{z}_{kind}"
                if kind == "vae":
                    model, guide = build_vae(data.x_dim, z, [hidden], likelihood=data.likelihood, seed=seed)
                    meta = vae_meta(data, z, [hidden])
                else:
                    opts = {"z_dim": z, "hidden": [hidden], "likelihood": "normal" if kind == "ae" else "bernoulli"}
                    model, guide, _ = ppvae.build("ae", data.x_dim, opts, seed=seed)
                    meta = {"family": "ae", "model_options": opts, "x_dim": data.x_dim, "image_shape": list(data.image_shape)}
                t = train(name, model, guide, data, out, epochs=epochs, batch_size=100, lr=1e-3,
                          objective="elbo-analytic", weight_decay=WEIGHT_DECAY, seed=seed, meta=meta)
                rec = reconstruction(t.model, t.guide, x)
                recs[kind] = rec
                mse = float(((rec - x) ** 2).mean())
                rows.append({"dataset": dataset, "z_dim": z, "model": kind, "mse": mse})
                models[name] = {"dataset": dataset, "z_dim": z, "model": kind, "mse": mse, "epochs": len(t.history),
                                "wall_s": t.wall_s, "cpu_s": t.cpu_s}
                print(f"{name}: MSE {mse:.5f} ({t.cpu_s:.0f} CPU s)", flush=True)
            _examples(x[:8], recs, data.image_shape, out / f"{dataset}_z{z}_examples.png")
    results = {"budget": budget, "machine": machine(), "weight_decay": WEIGHT_DECAY, "models": models}
    figure(rows, b.z_dims, out / "mse.png")
    write_json(out / "results.json", results)
    write_csv(out / "aevb_mse.csv", rows, CSV_COLUMNS)
    return results


def _examples(x: torch.Tensor, recs: dict[str, torch.Tensor], shape, path: Path) -> Path:
    """Originals above each model's reconstructions, one named row per model (the report's Figure 8)."""
    return save_reconstructions(x, recs, shape, path, n=x.shape[0], ncol=x.shape[0], upscale=max(1, 56 // max(shape)))


def figure(rows: list[dict], z_dims, path: Path) -> Path:
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = Figure(figsize=(5.0 * len(datasets), 4.0), dpi=100)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, ds in zip(axes, datasets):
        kinds = list(dict.fromkeys(r["model"] for r in rows if r["dataset"] == ds))
        width = 0.8 / len(kinds)
        for i, kind in enumerate(kinds):
            vals = [next(r["mse"] for r in rows if r["dataset"] == ds and r["model"] == kind and r["z_dim"] == z) for z in z_dims]
            xs = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(z_dims))]
            ax.bar(xs, vals, width, label=kind)
        ax.set_xticks(range(len(z_dims)), [f"z = {z}" for z in z_dims])
        ax.set_ylabel("test MSE per pixel")
        ax.set_title(ds, fontsize="medium")
        ax.legend(fontsize="small")
        ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path)


def main(argv=None) -> int:
    p = experiment_parser("ppvae.experiments.aevb_reconstruction", __doc__)
    args = parse_experiment_args(p, argv)
    run(args.budget, args.out, args.data_root, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
