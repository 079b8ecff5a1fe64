"""Learned 2-D manifolds on MNIST and Frey Face (Kingma & Welling 2014, Figure 4; the AEVB report,
section 4.1):

    python -m ppvae.experiments.aevb_manifolds --budget full --out runs/aevb

A VAE with a 2-D latent (MNIST: 500 tanh hidden units and a Bernoulli decoder; Frey Face: 200 and
a Gaussian decoder with learned variance, as in the paper) is trained with the analytic-KL ELBO;
the decoder's means on a grid of latent points spaced by equal prior mass (the inverse normal CDF
of a regular grid in the unit square) make the manifold figure, and the test set's posterior means,
coloured by digit, show which region of the latent space each class took.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ppvae.experiments.aevb_common import (experiment_parser, parse_experiment_args, eval_split, build_vae, check_budget, default_data_root, load, machine, mean_bound, train,
                                          vae_meta, write_json)
from ppvae.plots import save_latent_scatter, save_manifold


@dataclass(frozen=True)
class Budget:
    mnist_limit: int | None
    mnist_epochs: int
    frey_epochs: int


BUDGETS = {"quick": Budget(300, 2, 3), "full": Budget(None, 10, 300)}
SETTINGS = {  # dataset -> (hidden units, manifold grid n, upscale)
    "mnist": (500, 20, 1),
    "frey-face": (200, 10, 2),
}


def run(budget: str = "quick", out: str | Path = "runs/aevb", data_root: str | None = None, seed: int = 0) -> dict:
    b = BUDGETS[check_budget(budget)]
    out = Path(out) / "manifolds"
    root = data_root or default_data_root()
    results = {"budget": budget, "machine": machine(), "models": {}}
    for name in ("mnist", "frey-face"):
        limit = b.mnist_limit if name == "mnist" else (300 if budget == "quick" else None)
        data = load(name, root, limit=limit, quick=budget == "quick")
        hidden, n, up = SETTINGS[name]
        epochs = b.mnist_epochs if name == "mnist" else b.frey_epochs
        model, guide = build_vae(data.x_dim, 2, [hidden], activation="tanh", likelihood=data.likelihood, seed=seed)
        t = train(name, model, guide, data, out, epochs=epochs, batch_size=100, lr=1e-3, objective="elbo-analytic",
                  seed=seed, meta=vae_meta(data, 2, [hidden]))
        shape = data.image_shape
        save_manifold(t.model.decode, shape, out / f"{name}_manifold.png", n=n, upscale=up)
        codes = t.guide.encode(data.test)
        labels = data.labels("test")
        save_latent_scatter(codes, out / f"{name}_codes.png", labels=labels, title=f"{data.name} test set: E_q[z | x]")
        results["models"][name] = {
            "epochs": len(t.history), "hidden": hidden, "likelihood": data.likelihood,
            "train_elbo": mean_bound(t.model, t.guide, eval_split(data, "train", 5000)), "test_elbo": mean_bound(t.model, t.guide, data.test),
            "wall_s": t.wall_s, "cpu_s": t.cpu_s,
        }
        print(f"{name}: test ELBO {results['models'][name]['test_elbo']:.2f} after {len(t.history)} epochs "
              f"({t.cpu_s:.0f} CPU s)", flush=True)
    write_json(out / "results.json", results)
    return results


def main(argv=None) -> int:
    p = experiment_parser("ppvae.experiments.aevb_manifolds", __doc__)
    args = parse_experiment_args(p, argv)
    run(args.budget, args.out, args.data_root, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
