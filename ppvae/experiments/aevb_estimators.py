"""SGVB estimator A (Monte Carlo KL, ``elbo``) against estimator B (analytic KL,
``elbo-analytic``) across latent sizes, with the variance of their gradients (the AEVB report,
section 4.4), on MNIST:

    python -m ppvae.experiments.aevb_estimators --budget full --out runs/aevb

For each latent size z in 2, 5, 10, 20 one VAE is trained with each estimator (one sample per
datapoint, 500 tanh hidden units, batch 100, Adam 1e-3, the same epochs). At the first, middle and
last epoch the gradient of both estimators is drawn R times on one fixed minibatch at the model's
current parameters; the variance of each parameter's gradient, summed over the encoder's
parameters (trace of the covariance), measures the estimator's noise (the decoder's gradient comes
from log p(x | z) alone and is the same for both). Reported: the final test ELBO of each model
(estimated with the analytic KL and 10 samples, the same for all), and the encoder gradient's
total variance and signal-to-noise ratio ||E g||^2 / tr Cov(g) of both estimators.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

import ppvae
from ppvae.experiments.aevb_common import (experiment_parser, parse_experiment_args, save_figure, eval_split, build_vae, check_budget, default_data_root, load, machine, mean_bound, train,
                                          vae_meta, write_json)

ESTIMATORS = {"A": "elbo", "B": "elbo-analytic"}
WIDTH = 500


@dataclass(frozen=True)
class Budget:
    z_dims: tuple[int, ...]
    limit: int | None
    valid_size: int | None
    epochs: int
    draws: int  # gradient draws per variance estimate


BUDGETS = {"quick": Budget((2, 5), 300, None, 2, 5), "full": Budget((2, 5, 10, 20), 10_000, 2_000, 30, 50)}


def gradient_variance(model, guide, x: torch.Tensor, draws: int) -> dict[str, dict[str, float]]:
    """For each estimator: tr Cov and ||mean||^2 of the gradient of minus the mean bound over the
    minibatch ``x`` with respect to the encoder's parameters, over ``draws`` draws (the training
    run's random numbers are left alone)."""
    params = [p for p in guide.parameters() if p.requires_grad]
    out = {}
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        for label, objective in ESTIMATORS.items():
            obj = ppvae.get_objective(objective, 1)
            grads = []
            for _ in range(draws):
                loss = obj.loss(model, guide, x) / x.shape[0]
                grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
            g = torch.stack(grads).double()
            var = float(g.var(0).sum())
            # ||mean||^2 overestimates ||E g||^2 by tr Cov / draws: remove that bias
            signal = max(float((g.mean(0) ** 2).sum()) - var / draws, 0.0)
            out[label] = {"trace_cov": var, "mean_sq_norm": signal, "snr": signal / var if var > 0 else float("inf")}
    return out


def run(budget: str = "quick", out: str | Path = "runs/aevb", data_root: str | None = None, seed: int = 0) -> dict:
    b = BUDGETS[check_budget(budget)]
    out = Path(out) / "estimators"
    data = load("mnist", data_root or default_data_root(), limit=b.limit, quick=budget == "quick", valid_size=b.valid_size)
    probe_x = data.valid[:100]  # binarized once: the same minibatch at every measurement
    test = data.test  # all of it: MNIST's first 5,000 test digits are the cleaner half
    checkpoints = sorted({1, max(1, b.epochs // 2), b.epochs})
    models = {}
    for z in b.z_dims:
        for label, objective in ESTIMATORS.items():
            name = f"z{z}_{label}"
            model, guide = build_vae(data.x_dim, z, [WIDTH], likelihood=data.likelihood, seed=seed)
            store = out / name / "gradient_variance.json"
            measured = json.loads(store.read_text()) if store.exists() else {}

            def measure(metrics, model=model, guide=guide, measured=measured, store=store):
                if metrics["epoch"] in checkpoints:
                    measured[str(metrics["epoch"])] = gradient_variance(model, guide, probe_x, b.draws)
                    store.write_text(json.dumps(measured))

            t = train(name, model, guide, data, out, epochs=b.epochs, batch_size=100, lr=1e-3, objective=objective,
                      seed=seed, callbacks=[measure], meta=vae_meta(data, z, [WIDTH]))
            torch.manual_seed(seed)
            models[name] = {
                "z_dim": z, "estimator": label, "objective": objective, "epochs": len(t.history),
                "valid_curve": [h[next(k for k in h if k.startswith("valid_"))] for h in t.history],
                "test_elbo": mean_bound(t.model, t.guide, test, particles=10),
                "train_elbo": mean_bound(t.model, t.guide, eval_split(data, "train", 5000), particles=10),
                "gradient_variance": measured, "wall_s": t.wall_s, "cpu_s": t.cpu_s,
            }
            gv = measured.get(str(b.epochs), {})
            print(f"{name}: test ELBO {models[name]['test_elbo']:.2f}; encoder gradient tr Cov at the end: "
                  + ", ".join(f"{k} {v['trace_cov']:.3g}" for k, v in gv.items()), flush=True)
    results = {"budget": budget, "machine": machine(), "dataset": data.name, "train_size": len(data), "epochs": b.epochs,
               "draws": b.draws, "checkpoints": checkpoints, "models": models}
    figure(models, b, out / "estimators.png")
    write_json(out / "results.json", results)
    return results


def figure(models: dict, b: Budget, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.0), dpi=100)
    ax, bx, cx = fig.subplots(1, 3)
    zs = list(b.z_dims)
    for label, colour in (("A", "tab:orange"), ("B", "tab:blue")):
        ax.plot(zs, [models[f"z{z}_{label}"]["test_elbo"] for z in zs], marker="o", color=colour,
                label=f"trained with {label} ({ESTIMATORS[label]})")
    ax.set_xlabel("latent size z")
    ax.set_ylabel("test ELBO (nats / datapoint)")
    ax.set_xticks(zs)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("bound after training", fontsize="medium")
    last = str(b.epochs)
    for label, colour in (("A", "tab:orange"), ("B", "tab:blue")):
        v = [models[f"z{z}_B"]["gradient_variance"].get(last, {}).get(label, {}).get("trace_cov", float("nan")) for z in zs]
        bx.plot(zs, v, marker="o", color=colour, label=f"estimator {label}")
    bx.set_yscale("log")
    bx.set_xlabel("latent size z")
    bx.set_ylabel("tr Cov of the encoder gradient")
    bx.set_xticks(zs)
    bx.grid(True, alpha=0.3, which="both")
    bx.legend(fontsize="small")
    bx.set_title("gradient noise at the same parameters\n(the B-trained model, last epoch)", fontsize="medium")
    for label, colour in (("A", "tab:orange"), ("B", "tab:blue")):
        epochs = sorted(int(e) for e in models[f"z{zs[-1]}_{label}"]["gradient_variance"])
        for z, ls in zip(zs, ("-", "--", "-.", ":")):
            gv = models[f"z{z}_{label}"]["gradient_variance"]
            cx.plot(epochs, [gv[str(e)][label]["snr"] for e in epochs], ls=ls, marker=".", color=colour,
                    label=f"{label}, z={z}")
    cx.set_yscale("log")
    cx.set_xlabel("epoch")
    cx.set_ylabel("||E g||^2 / tr Cov(g)")
    cx.grid(True, alpha=0.3, which="both")
    cx.legend(fontsize="x-small", ncol=2)
    cx.set_title("signal-to-noise of the estimator\neach model was trained with", fontsize="medium")
    return save_figure(fig, path)


def main(argv=None) -> int:
    p = experiment_parser("ppvae.experiments.aevb_estimators", __doc__)
    args = parse_experiment_args(p, argv)
    run(args.budget, args.out, args.data_root, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
