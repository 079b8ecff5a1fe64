"""AAE, VAE and alpha-GAN on MNIST with the same networks, judged by likelihood and by samples.

    python -m ppvae.experiments.adversarial_mnist --data-root DATA --epochs 10 --out RUNS/adversarial-mnist

Four models share the encoder/decoder networks (two ReLU layers of ``--hidden`` units, an
8-dimensional code, as the AAE paper's likelihood experiment), trained on dynamically binarized
MNIST:

- ``aae``: deterministic encoder, N(0, I) prior, the ``aae`` scheme (the paper's AAE);
- ``aae-gaussian-encoder``: the same with a Gaussian encoder, so log p(x) can be importance-sampled;
- ``vae``: the same networks and Gaussian encoder trained with the ELBO (``elbo-analytic``);
- ``alpha-gan``: the ``alpha-gan`` family and scheme with the same encoder/generator widths.

Each is scored by the Parzen window on the grey-level test images (10,000 samples, bandwidth on
1,000 validation images), by ppvae's MNIST-classifier score and Frechet distance, and, where the
guide has a density, by importance-sampled log p(x) with Pareto-k. Each model is a resumable run
folder ``OUT/<model>/``; ``OUT/results.json`` and the CSVs are rebuilt from them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import torch

import ppvae
from ppvae.evaluate import mean_and_se
from ppvae.evaluate_samples import sample_report
from ppvae.schemes import AdversarialScheme


def specs(hidden: list[int], z_dim: int, dropout: float = 0.0,
          regularization_lr: float | None = None) -> dict[str, tuple[str, dict, object]]:
    aae = {"z_dim": z_dim, "hidden": hidden, "activation": "relu", **({"dropout": dropout} if dropout else {})}

    def scheme():
        return AdversarialScheme(hidden=tuple(hidden), discriminator_lr=regularization_lr, generator_lr=regularization_lr)

    return {
        "aae": ("aae", aae, scheme),
        "aae-gaussian-encoder": ("aae", {**aae, "encoder": "gaussian"}, scheme),
        "vae": ("aae", {**aae, "encoder": "gaussian"}, lambda: "bound"),
        "alpha-gan": ("alpha-gan", {"z_dim": z_dim, "hidden": hidden, "activation": "relu"}, lambda: None),
    }


def run(name: str, family: str, options: dict, scheme, data, args, out: Path) -> dict:
    folder = out / name
    result_path = folder / "result.json"
    if result_path.exists():
        old = json.loads(result_path.read_text())
        if old["epochs"] == args.epochs and old["model_samples"] == args.model_samples:
            return old
    model, guide, _ = ppvae.build(family, data.x_dim, options, seed=args.seed)
    fit = ppvae.fit(model, guide, data, scheme=scheme(), objective="elbo-analytic", epochs=args.epochs, lr=args.lr,
                    adam_betas=(0.5, 0.999), batch_size=100, seed=args.seed, out_dir=folder,
                    resume=(folder / "last.pt").exists(), progress=args.progress,
                    meta={"family": family, "model_options": options, "x_dim": data.x_dim, "image_shape": [28, 28],
                          "dataset": {"name": "mnist", "root": args.data_root}})
    model.eval(), guide.eval()
    t0 = time.process_time()
    torch.manual_seed(args.seed)
    result = {"model": name, "family": family, "options": options, "epochs": args.epochs,
              "model_samples": args.model_samples, "lr": args.lr, "regularization_lr": args.regularization_lr,
              "train_cpu_seconds": float(sum(h.get("cpu_seconds", 0.0) for h in fit.history)),
              **sample_report(model, data, data.test, num_samples=args.model_samples, parzen=True, quality=True,
                              data_root=args.data_root)}
    if family == "aae" and options.get("encoder") == "gaussian":
        x = data.test[: args.loglik_points]
        res = ppvae.log_likelihood(model, guide, x, num_samples=args.loglik_samples, diagnostics=True, seed=args.seed)
        result["log_px"], result["log_px_se"] = mean_and_se(res.log_px)
        result["pareto_k_share_above_0.7"] = float((res.pareto_k > 0.7).double().mean())
        result["log_px_points"], result["log_px_samples"] = int(x.shape[0]), args.loglik_samples
    result["eval_cpu_seconds"] = time.process_time() - t0
    result_path.write_text(json.dumps(result, indent=2))
    return result


def write_tables(results: list[dict], out_docs: Path | None) -> str:
    def table(rows, columns):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    aae_rows = [{"model": r["model"], "parzen": round(r["parzen"]["mean"], 2), "parzen_se": round(r["parzen"]["se"], 2),
                 "sigma": round(r["parzen"]["sigma"], 4), "log_px": round(r["log_px"], 2) if "log_px" in r else "",
                 "log_px_se": round(r["log_px_se"], 2) if "log_px" in r else "",
                 "pareto_k_share_above_0.7": r.get("pareto_k_share_above_0.7", ""),
                 "epochs": r["epochs"], "train_cpu_s": round(r["train_cpu_seconds"])} for r in results]
    quality_rows = [{"model": r["model"], "classifier_score": round(r["sample_quality"]["classifier_score"], 3),
                     "frechet_distance": round(r["sample_quality"]["frechet_distance"], 2), "epochs": r["epochs"],
                     "train_cpu_s": round(r["train_cpu_seconds"])} for r in results]
    if results:
        ref = results[0]["sample_quality"]["reference_classifier_score"]
        quality_rows.append({"model": "real MNIST test images", "classifier_score": round(ref, 3), "frechet_distance": 0.0,
                             "epochs": "", "train_cpu_s": ""})
    a = table(aae_rows, list(aae_rows[0]) if aae_rows else ["model"])
    q = table(quality_rows, list(quality_rows[0]) if quality_rows else ["model"])
    if out_docs is not None:
        out_docs.mkdir(parents=True, exist_ok=True)
        (out_docs / "aae_unsupervised.csv").write_text(a)
        (out_docs / "alpha_gan.csv").write_text(q)
    return a + "\n" + q


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--z-dim", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate (of the reconstruction phase, for the AAEs)")
    p.add_argument("--regularization-lr", type=float, default=None,
                   help="the AAEs' discriminator and generator learning rate [--lr] (the 345-Parzen reimplementation: 1e-4 "
                        "with --lr 2e-4)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout after each hidden layer of encoder and decoder, in training only (the 345-Parzen "
                        "reimplementation used dropout; 0.1 drops one unit in ten)")
    p.add_argument("--model-samples", type=int, default=10_000)
    p.add_argument("--loglik-points", type=int, default=1000)
    p.add_argument("--loglik-samples", type=int, default=1000)
    p.add_argument("--only", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/adversarial-mnist")
    p.add_argument("--docs", default=None, help="also write aae_unsupervised.csv and alpha_gan.csv into this folder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = ppvae.load_dataset("mnist", args.data_root)
    only = set(args.only.split(",")) if args.only else None
    results = []
    hidden = [int(h) for h in args.hidden.split(",")]
    for name, (family, options, scheme) in specs(hidden, args.z_dim, args.dropout, args.regularization_lr).items():
        if only is None or name in only:
            results.append(run(name, family, options, scheme, data, args, out))
            print(f"{name}: {json.dumps({k: v for k, v in results[-1].items() if k in ('log_px', 'train_cpu_seconds')})} "
                  f"parzen {results[-1]['parzen']['mean']:.1f} +- {results[-1]['parzen']['se']:.1f}, "
                  f"classifier score {results[-1]['sample_quality']['classifier_score']:.2f}, "
                  f"FD {results[-1]['sample_quality']['frechet_distance']:.2f}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(write_tables(results, Path(args.docs) if args.docs else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
