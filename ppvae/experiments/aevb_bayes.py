"""Full variational Bayes over the decoder's weights against the point-estimate VAE (the AEVB
report, section 6), on fixed-binarized MNIST:

    python -m ppvae.experiments.aevb_bayes --budget full --out runs/aevb

Both models have the IWAE paper's one-layer architecture (784-200-200-50 tanh, Bernoulli decoder),
the same optimizer, batch size, epochs and KL warm-up, and are trained with the analytic-KL ELBO.
The point-estimate VAE (``vae``) fits the decoder weights by maximum likelihood; ``bayes-vae``
gives them a N(0, 1) prior and a mean-field Normal posterior (means from the same initialisation,
log-variance -10), with the weight KL counted once per minibatch (N / B local terms + KL). Test and
training log p(x) are importance-sampled with the guide as proposal; for the Bayesian model each
sample draws its own decoder weights from q(w), so the figure is the posterior-predictive log
density log E_q(w)[p(x | w)] (``ppvae.likelihood``). The train-test gap of each says how much each
overfits. Variants (``--models``): ``bayes-vae-lrt`` (local reparameterization trick),
``bayes-vae-mixture`` (Blundell et al.'s scale-mixture prior, Monte Carlo weight KL), and
``vae-small`` / ``bayes-vae-small``: the same pair on the first 2,000 training images for 250
epochs, a regime where the point estimate overfits (scored on the whole test set).

Outputs in ``OUT/bayes``: one run folder per model, ``results.json``, ``bayes_vae.csv`` (model,
test_log_px, train_log_px, epochs, wall_s), the posterior standard deviations per layer
(``posterior_std.png``), the arviz summary of chosen weights (``weights_summary.csv``), validation
curves and samples of both models.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import ppvae
from ppvae.analysis import sample
from ppvae.bayes import inference_data, save_posterior_scales
from ppvae.experiments.aevb_common import (experiment_parser, parse_experiment_args, save_figure, check_budget, default_data_root, last, load, machine, mean_bound, train,
                                          write_csv, write_json)
from ppvae.plots import save_image_grid

CSV_COLUMNS = ("model", "test_log_px", "train_log_px", "epochs", "wall_s")

MODELS = {  # name -> (family, extra options, small: trained on the budget's small training set)
    "vae": ("vae", {}, False),
    "bayes-vae": ("bayes-vae", {}, False),
    "bayes-vae-lrt": ("bayes-vae", {"local_reparameterization": True}, False),
    "bayes-vae-mixture": ("bayes-vae", {"prior": "scale-mixture"}, False),
    "vae-small": ("vae", {}, True),
    "bayes-vae-small": ("bayes-vae", {}, True),
}


@dataclass(frozen=True)
class Budget:
    limit: int | None  # rows of each split (None: all 50,000 / 10,000 / 10,000)
    epochs: int
    kl_warmup: float
    eval_points: int  # points of the test and of the training split scored by log p(x), drawn at random
    num_samples: int  # importance samples per point
    hidden: tuple[int, ...]
    z_dim: int
    small_train: int  # the small-data regime ("-small" models): the first images of the training split
    small_epochs: int
    small_warmup: float


BUDGETS = {
    "quick": Budget(300, 2, 1.0, 50, 20, (64,), 8, 100, 2, 1.0),
    "full": Budget(None, 20, 5.0, 2000, 1000, (200, 200), 50, 2000, 250, 25.0),
}


def evaluation_points(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` rows drawn at random (fixed seed), not the first ``n``: the fixed-binarized MNIST test
    file is ordered (the point-estimate VAE's ELBO on its five blocks of 2,000: -83, -117, -112,
    -100, -111 nats), so a prefix scores up to ~20 nats better than the whole."""
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx.sort().values]


def options(family: str, extra: dict, b: Budget) -> dict:
    if family == "vae":
        return {"z_dims": [b.z_dim], "hidden": [list(b.hidden)], "likelihood": "bernoulli"}
    return {"z_dim": b.z_dim, "hidden": list(b.hidden), "likelihood": "bernoulli", **extra}


def run(budget: str = "quick", out: str | Path = "runs/aevb", data_root: str | None = None,
        models: tuple[str, ...] = ("vae", "bayes-vae"), seed: int = 0, lr: float = 1e-3) -> dict:
    b = BUDGETS[check_budget(budget)]
    out = Path(out) / "bayes"
    data = load("binarized-mnist", data_root or default_data_root(), limit=b.limit, quick=budget == "quick")
    results = {"budget": budget, "machine": machine(), "dataset": data.name, "epochs": b.epochs,
               "kl_warmup_epochs": b.kl_warmup, "eval_points": b.eval_points, "num_samples": b.num_samples,
               "architecture": f"{data.x_dim}-{'-'.join(map(str, b.hidden))}-{b.z_dim} tanh", "models": {}}
    # the small-data regime: few training images, many epochs, the whole test set (where the point
    # estimate overfits, which is what weight uncertainty is meant to curb)
    small = replace(data, train=data.train[: b.small_train], valid=data.valid[: b.small_train // 2],
                    train_labels=None, valid_labels=None, test_labels=None)
    for name in models:
        family, extra, is_small = MODELS[name]
        opts = options(family, extra, b)
        d = small if is_small else data
        model, guide, _ = ppvae.build(family, data.x_dim, opts, seed=seed)
        t = train(name, model, guide, d, out, epochs=b.small_epochs if is_small else b.epochs, batch_size=100, lr=lr,
                  objective="elbo-analytic", kl_warmup_epochs=b.small_warmup if is_small else b.kl_warmup, seed=seed,
                  meta={"family": family, "model_options": opts, "x_dim": data.x_dim,
                        "image_shape": list(data.image_shape), "dataset": {"name": data.name, "root": None, "file": None}})
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        xs = {k: evaluation_points(d.split(k), b.eval_points, seed) for k in ("test", "train")}
        lp = {k: ppvae.log_likelihood(t.model, t.guide, x, num_samples=b.num_samples) for k, x in xs.items()}
        torch.save({k: v.cpu() for k, v in lp.items()}, out / name / "log_px.pt")  # per point: paired comparisons
        elbo = {k: mean_bound(t.model, t.guide, x) for k, x in xs.items()}
        info = {
            "family": family, "options": opts,
            "test_log_px": float(lp["test"].mean()), "test_log_px_se": float(lp["test"].std() / math.sqrt(len(lp["test"]))),
            "train_log_px": float(lp["train"].mean()), "train_log_px_se": float(lp["train"].std() / math.sqrt(len(lp["train"]))),
            "test_elbo": elbo["test"], "train_elbo": elbo["train"],
            "valid_bound_last_epoch": last(t.history, "valid_"), "train_loss_last_epoch": last(t.history, "train_loss"),
            "train_size": len(d), "epochs": len(t.history), "wall_s": t.wall_s, "cpu_s": t.cpu_s,
            "eval_wall_s": time.perf_counter() - t0,
        }
        info["train_test_gap"] = info["train_log_px"] - info["test_log_px"]
        if family == "bayes-vae":
            q = t.guide.weights
            n = len(d)
            scales = torch.cat([q.scale(s).detach().reshape(-1) for s in q.sites])
            info.update({
                "num_weights": q.num_weights(),
                "weight_kl_per_datapoint": float(q.kl("normal", opts.get("prior_scale", 1.0)).detach()) / n
                if opts.get("prior", "normal") == "normal" else None,
                "posterior_std_median": float(scales.median()),
                "share_std_above_0.1": float((scales > 0.1).double().mean()),
            })
            save_posterior_scales(q, out / f"{name}_posterior_std.png", init_log_var=t.model.config.init_log_var,
                                  prior_scales=[opts.get("prior_scale", 1.0)] if opts.get("prior", "normal") == "normal"
                                  else list(t.model.config.mixture[1:]),
                                  title=f"{name}: posterior standard deviations per decoder layer")
            idata = inference_data(q, num_draws=1000, seed=seed)
            import arviz as az

            az.summary(idata, kind="stats").to_csv(out / f"{name}_weights_summary.csv")
        torch.manual_seed(seed)
        save_image_grid(sample(t.model, 64, data.x_dim), data.image_shape, out / f"{name}_samples.png", nrow=8)
        results["models"][name] = info
        print(f"{name}: test log p(x) {info['test_log_px']:.2f} +- {info['test_log_px_se']:.2f}, train "
              f"{info['train_log_px']:.2f}, gap {info['train_test_gap']:.2f}; {info['epochs']} epochs, "
              f"{info['wall_s']:.0f} s", flush=True)
    # models run earlier into the same folder (e.g. the variants, run separately) stay in the tables
    previous = out / "results.json"
    if previous.exists():
        import json

        old = json.loads(previous.read_text())
        if old.get("budget") == budget:
            results["models"] = {**{k: v for k, v in old["models"].items() if k not in results["models"]}, **results["models"]}
    results["paired"] = paired(out, results["models"])
    rows = [{"model": n, **{k: r[k] for k in CSV_COLUMNS if k != "model"}} for n, r in results["models"].items()]
    _curves({n: (out / n / "metrics.jsonl") for n in results["models"]}, out / "validation_curves.png")
    write_json(out / "results.json", results)
    write_csv(out / "bayes_vae.csv", rows, CSV_COLUMNS)
    return results


def paired(out: Path, models: dict) -> dict:
    """Each Bayesian model's test log p(x) minus its point-estimate counterpart's, on the same test
    points: mean and paired standard error (the points are shared, so their noise mostly cancels)."""
    pairs = {}
    for name, info in models.items():
        if info["family"] != "bayes-vae":
            continue
        ref = "vae-small" if name.endswith("-small") else "vae"
        files = [out / n / "log_px.pt" for n in (name, ref)]
        if ref not in models or not all(f.exists() for f in files):
            continue
        a, b = (torch.load(f)["test"].double() for f in files)
        if a.shape != b.shape:
            continue
        d = a - b
        pairs[f"{name} - {ref}"] = {"mean": float(d.mean()), "se": float(d.std() / math.sqrt(d.numel())), "points": d.numel()}
    return pairs


def _curves(runs: dict[str, Path], path: Path) -> Path:
    """The validation ELBO of every model against the epoch: the full training set's models on
    the left, the small-data regime's (other epochs, other scale) on the right."""
    import json

    from matplotlib.figure import Figure

    groups = {"50,000 training images": [n for n in runs if not n.endswith("-small")],
              "2,000 training images": [n for n in runs if n.endswith("-small")]}
    groups = {k: v for k, v in groups.items() if v}
    fig = Figure(figsize=(5.6 * len(groups), 4.2), dpi=100)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (title, names) in zip(axes, groups.items()):
        tails = []
        for name in names:
            h = [json.loads(line) for line in runs[name].read_text().splitlines() if line.strip()]
            key = next(k for k in h[0] if k.startswith("valid_"))
            ys = [r[key] for r in h]
            ax.plot([r["epoch"] for r in h], ys, marker="." if len(ys) <= 50 else None, label=name)
            tails += ys[len(ys) // 4:]
        lo, hi = min(tails), max(tails)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1), hi + 0.1 * (hi - lo + 1))  # the early epochs off-scale
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation ELBO (nats per datapoint)")
        ax.set_title(title, fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def main(argv=None) -> int:
    p = experiment_parser("ppvae.experiments.aevb_bayes", __doc__)
    p.add_argument("--models", default="vae,bayes-vae", help=f"comma-separated, from {', '.join(MODELS)}")
    args = parse_experiment_args(p, argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = set(models) - set(MODELS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    run(args.budget, args.out, args.data_root, models, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
