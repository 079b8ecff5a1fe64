"""The adversarial-autoencoder paper's categorical experiments, from scratch: semi-supervised
classification error with 100, 1000 and all labels, unsupervised clustering error with 16 and 30
clusters, and the 2-D embedding with cluster heads beside a 2-D VAE's and a 2-D AAE's.

    python -m ppvae.experiments.aae_categorical --data-root DATA --out RUNS --results docs/results

Every model is its own resumable run folder ``OUT/<name>/`` (``last.pt``, ``best.pt``,
``metrics.jsonl``): run the command again (with the same or a larger ``--epochs``) and each run
continues where it stopped; finished runs are only evaluated. After each run its ``result.json``
is written and the tables ``RESULTS/aae_semisupervised.csv`` (labels, error, epochs, wall_s) and
``RESULTS/aae_clustering.csv`` (clusters, error, epochs, wall_s) are rebuilt from every finished or
partial run, so an interrupted session still leaves its numbers.

- **Semi-supervised** (Makhzani et al. 2016, Section 5): the ``aae-categorical`` family with
  ``labels`` = 100, 1000, "all" (a balanced subset of the *training* split, fixed by a seed); the
  checkpoint with the lowest *validation* error (``best.pt``) is scored on the test set. The
  classifier reads the grey levels of the validation and test images (``Dataset.grey_levels``),
  as the classification literature does; the error on the fixed binary draws the likelihood is
  scored on is recorded beside it (``error_binarized_test``).
- **Clustering** (Section 6): ``labels=0`` and 16 or 30 clusters; each cluster takes the majority
  label of its training members, and the error is on the test set (the paper's own rule, the label
  of each cluster's most confident example, is in ``result.json`` too).
- **Dimensionality reduction** (Section 7): 2-D style plus 20 learned cluster heads, no labels; its
  test embedding W_C^T y + z is drawn beside the 2-D codes of a VAE (ELBO) and an AAE (Gaussian
  prior), and its clustering error is scored like the clustering runs'.

Figures per run: ``confusion.png`` (test), ``style_content.png`` (rows: styles z ~ p(z); columns:
the class or cluster given to the decoder), and ``embeddings.png`` for the three 2-D models.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

import ppvae
from ppvae.checkpoint import load
from ppvae.plots import save_codes_against_priors, save_style_content_grid
from ppvae.schemes import AdversarialScheme
from ppvae.schemes.categorical import CategoricalAdversarialScheme
from ppvae.semisupervised import (class_probabilities, classification_error, clustering_error, confusion_matrix,
                                  most_confident_labels, save_confusion_matrix)

# name -> (family, options, kind); widths and epochs come from the command line
RUNS: dict[str, tuple[str, dict, str]] = {
    "semi-100": ("aae-categorical", {"labels": 100}, "semi"),
    "semi-1000": ("aae-categorical", {"labels": 1000}, "semi"),
    "semi-all": ("aae-categorical", {"labels": "all"}, "semi"),
    "cluster-16": ("aae-categorical", {"labels": 0, "num_classes": 16}, "cluster"),
    "cluster-30": ("aae-categorical", {"labels": 0, "num_classes": 30}, "cluster"),
    "heads-2d": ("aae-categorical", {"labels": 0, "num_classes": 20, "cluster_heads": True, "z_dim": 2}, "heads"),
    "vae-2d": ("vae", {"z_dims": [2]}, "vae"),
    "aae-2d": ("aae", {"z_dim": 2, "prior": "gaussian"}, "aae"),
}
PAPER = {"semi-100": 1.90, "semi-1000": 1.60, "semi-all": 0.85, "cluster-16": 9.55, "cluster-30": 4.10}


# Model options the command line sets, with their defaults: the first three for the categorical
# AAEs with a free style (not the 2-D cluster-head model), the last for the semi-supervised ones.
# An option at its default is left out of the model options, so earlier runs' options, and so
# their folders, are unchanged.
STYLE_OPTIONS = {"dropout": 0.0, "input_noise": 0.0, "z_dim": None}
SEMI_OPTIONS = {"labelled_reconstruction": False}


def options_for(name: str, hidden: tuple[int, ...], likelihood: str, extra: dict | None = None) -> tuple[str, dict]:
    """The run's family and model options; ``extra`` holds the values of STYLE_OPTIONS and
    SEMI_OPTIONS, each applied where it means something and left out at its default."""
    family, options, kind = RUNS[name]
    opts = {**options, "likelihood": likelihood}
    if family == "vae":
        opts.update(hidden=[list(hidden)], activation="relu")
    else:
        opts["hidden"] = list(hidden)
    applies = {**STYLE_OPTIONS, **(SEMI_OPTIONS if kind == "semi" else {})} if kind in ("semi", "cluster") else {}
    opts.update({k: v for k, v in (extra or {}).items() if k in applies and v != applies[k]})
    return family, opts


def train(name: str, data, *, epochs: int, hidden: tuple[int, ...], out: Path, seed: int, lr: float,
          betas: tuple[float, float], batch_size: int, progress: bool, supervised_lr: float | None = None,
          lr_schedule: str = "constant", lr_gamma: float = 0.99, extra: dict | None = None):
    """Train (or resume, or just load when done) one model in ``out/name``; returns (model, guide,
    history). ``extra``: the model options of :func:`options_for`."""
    family, opts = options_for(name, hidden, data.likelihood, extra)
    model, guide, _ = ppvae.build(family, data.x_dim, opts, seed=seed)
    folder = out / name
    resume = (folder / "last.pt").exists()
    scheme = (AdversarialScheme(hidden=hidden) if family == "aae" else
              CategoricalAdversarialScheme(supervised_lr=supervised_lr) if family == "aae-categorical" else None)
    result = ppvae.fit(model, guide, data, scheme=scheme, epochs=epochs, lr=lr, lr_schedule=lr_schedule, lr_gamma=lr_gamma,
                       adam_betas=betas, batch_size=batch_size,
                       seed=seed, out_dir=folder, resume=resume, progress=progress,
                       meta={"family": family, "model_options": opts, "x_dim": data.x_dim,
                             "image_shape": list(data.image_shape), "likelihood": data.likelihood},
                       callbacks=[lambda m: print(f"  {name} epoch {m['epoch']}: " + ", ".join(
                           f"{k}={v:.4g}" for k, v in m.items() if k.startswith("valid") or k in ("reconstruction_loss", "supervised_loss", "epoch_seconds")), flush=True)])
    history = result.history or [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return model.eval(), guide.eval(), history


def load_best(model, guide, folder: Path) -> int:
    """Put the weights of ``best.pt`` (chosen on the validation split) into the pair; its epoch."""
    ckpt = load(folder / "best.pt")
    model.load_state_dict(ckpt["model_state"])
    guide.load_state_dict(ckpt["guide_state"])
    return int(ckpt["epoch"])


@torch.no_grad()
def evaluate(name: str, model, guide, data, history: list[dict], folder: Path, image_up: int,
             settings: dict | None = None) -> dict:
    """Test error (semi-supervised: at best.pt; clustering: majority labels of training members),
    the confusion matrix and the style/content grid; written to ``folder/result.json``."""
    _, _, kind = RUNS[name]
    K = model.config.num_classes
    best_epoch = load_best(model, guide, folder) if kind == "semi" else len(history)
    result = {"name": name, "epochs": len(history), "selected_epoch": best_epoch,
              "wall_s": round(sum(h.get("epoch_seconds", h.get("time", 0.0)) for h in history), 1),
              # on a shared machine wall time depends on the other jobs; CPU time of this process does not
              "cpu_s": round(sum(h.get("cpu_seconds", 0.0) for h in history), 1),
              "hidden": list(model.config.hidden), "options": RUNS[name][1], "settings": settings or {}}
    # Classify the grey levels (as the literature reads MNIST), not the one fixed binary draw of
    # each test image; the error on the binary draws is recorded beside it.
    test_probs = class_probabilities(guide, data.grey_levels("test"))
    binary_assigned = class_probabilities(guide, data.test).argmax(-1)
    test_labels = data.labels("test")
    if kind == "semi":
        predicted = test_probs.argmax(-1)
        result["error"] = classification_error(predicted, test_labels)
        result["error_binarized_test"] = classification_error(binary_assigned, test_labels)
        result["valid_error"] = history[best_epoch - 1].get("valid_error")
        matrix, title = confusion_matrix(predicted, test_labels, K), f"{name}: test error {100 * result['error']:.2f}%"
        save_confusion_matrix(matrix, folder / "confusion.png", title=title)
    else:
        train_probs = class_probabilities(guide, data.grey_levels("train"))
        train_labels = data.labels("train")
        error, mapping = clustering_error(train_probs.argmax(-1), train_labels, test_probs.argmax(-1), test_labels, K)
        result["error_binarized_test"], _ = clustering_error(None, None, binary_assigned, test_labels, K, mapping=mapping)
        paper_error, _ = clustering_error(None, None, test_probs.argmax(-1), test_labels, K,
                                          mapping=most_confident_labels(train_probs, train_labels))
        result.update(error=error, error_most_confident_rule=paper_error, cluster_labels=mapping.tolist(),
                      clusters_used=int(test_probs.argmax(-1).unique().numel()))
        matrix = confusion_matrix(test_probs.argmax(-1), test_labels, max(K, 10))[:10, :K]
        save_confusion_matrix(matrix, folder / "confusion.png", xlabel="cluster", ylabel="true label",
                              title=f"{name}: test clustering error {100 * error:.2f}%")
    torch.manual_seed(0)
    styles = model.sample_prior(10)["z"]  # (10, d): one style per row
    y = torch.arange(K).repeat(10)
    save_style_content_grid(model.decode(y, styles.repeat_interleave(K, 0)), data.image_shape, folder / "style_content.png",
                            num_classes=K, upscale=image_up)
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


@torch.no_grad()
def embedding_panel(name: str, model, guide, data, n: int = 5000):
    """(title, 2-D test codes, labels, prior draws in the same space) for the embedding figure."""
    x, labels = data.test[:n], data.labels("test")[:n]
    if name == "heads-2d":
        probs, z = guide.encode(x)
        draws = model.sample_prior(n)
        return ("AAE, 20 cluster heads + 2-D style (no labels)", model.embed(probs, z), labels,
                model.embed(draws["y"], draws["z"]))
    if name == "vae-2d":
        return ("VAE (ELBO), 2-D, posterior means", guide.encode(x), labels, torch.randn(n, 2))
    return ("AAE, 2-D Gaussian prior", guide.encode(x), labels, model.sample_prior(n))


def save_error_curves(out: Path) -> Path | None:
    """Validation error per epoch of every semi-supervised and clustering run under ``out`` (the
    clustering runs' is the error with clusters labelled by their validation members' majority)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    curves = []
    for name, (_, _, kind) in RUNS.items():
        path = out / name / "metrics.jsonl"
        if kind in ("semi", "cluster", "heads") and path.exists():
            key = "valid_error" if kind == "semi" else "valid_cluster_error"
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            curves.append((name, kind, [r["epoch"] for r in rows], [100 * r[key] for r in rows]))
    if not curves:
        return None
    panels = [(kind, title) for kind, title in (("semi", "semi-supervised: validation error"),
                                                ("cluster", "clustering: validation error (majority of validation members)"))
              if any(k == kind or (kind == "cluster" and k == "heads") for _, k, _, _ in curves)]
    # one panel per kind that has runs: a run of one kind alone gets no empty panel beside it
    fig = Figure(figsize=(5 * len(panels), 4), dpi=100)
    for i, (kind, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, k, epochs, errors in curves:
            if k == kind or (kind == "cluster" and k == "heads"):
                ax.plot(epochs, errors, marker=".", label=name)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_title(title, fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "error_curves.png", format="png")
    return out / "error_curves.png"


def markdown_table(out: Path) -> str:
    """The results of every run under ``out`` beside the paper's numbers, as a Markdown table."""
    rows = ["| run | test error | binarized test | paper | epochs | selected epoch | wall s | CPU s | validation error |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in RUNS:
        path = out / name / "result.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        paper = f"{PAPER[name]:.2f}%" if name in PAPER else "-"
        valid, binary = r.get("valid_error"), r.get("error_binarized_test")
        binary = "-" if binary is None else f"{100 * binary:.2f}%"
        rows.append(f"| {name} | {100 * r['error']:.2f}% | {binary} | {paper} | {r['epochs']} | {r['selected_epoch']} | {r['wall_s']:.0f} | "
                    f"{r.get('cpu_s', 0):.0f} | {'-' if valid is None else f'{100 * valid:.2f}%'} |")
    return "\n".join(rows)


def write_tables(out: Path, results_dir: Path | None) -> list[Path]:
    """The two CSVs, rebuilt from every ``result.json`` under ``out``."""
    if results_dir is None:
        return []
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))}
    written = []
    for file, kind, key, values in (("aae_semisupervised.csv", "semi", "labels", ("semi-100", "semi-1000", "semi-all")),
                                    ("aae_clustering.csv", "cluster", "clusters", ("cluster-16", "cluster-30"))):
        path = results_dir / file
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            # the columns, then the error on the binary draws of the test images
            w.writerow([key, "error", "epochs", "wall_s", "error_binarized_test"])
            for name in values:
                if name in rows:
                    r = rows[name]
                    label = RUNS[name][1]["labels"] if kind == "semi" else RUNS[name][1]["num_classes"]
                    binary = r.get("error_binarized_test")
                    w.writerow([label, f"{r['error']:.4f}", r["epochs"], r["wall_s"], "" if binary is None else f"{binary:.4f}"])
        written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N rows of each split (quick checks)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run (a later call with more continues them)")
    p.add_argument("--epochs-for", default="", help="per-run epochs, e.g. semi-100=60,vae-2d=20 (overrides --epochs)")
    p.add_argument("--hidden", default="500,500", help="widths of encoder, decoder and discriminators (the paper's: 1000,1000)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--lr-schedule", default="constant", help="constant | exponential (lr_gamma^epoch: a function of the epoch alone, so a run extended later continues it) | cosine")
    p.add_argument("--lr-gamma", type=float, default=0.95, help="the exponential schedule's per-epoch factor")
    p.add_argument("--supervised-lr", type=float, default=None, help="learning rate of the supervised phase [the --lr]")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout after each hidden layer of the categorical AAEs' encoder and decoder (training only)")
    p.add_argument("--input-noise", type=float, default=0.0,
                   help="std of Gaussian noise on the categorical AAEs' encoder input (training only; the ladder "
                        "networks' 0.3); on MNIST it gained nothing measurable (docs/aae_categorical.md)")
    p.add_argument("--z-dim", type=int, default=None,
                   help="style size of the semi-supervised and clustering AAEs [10]; a smaller one leaves the class "
                        "fewer dimensions to hide in")
    p.add_argument("--labelled-reconstruction", action="store_true",
                   help="semi-supervised runs: also reconstruct each labelled minibatch with its true label as y "
                        "(not in the paper; see ppvae.schemes.categorical)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help=f"comma-separated runs (default: all of {', '.join(RUNS)})")
    p.add_argument("--out", default="runs/aae-categorical")
    p.add_argument("--results", default=None, help="folder for the two CSV tables (e.g. docs/results)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--report", action="store_true", help="only print the results under --out as a Markdown table")
    args = p.parse_args(argv)
    if args.report:
        print(markdown_table(Path(args.out)))
        return 0
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    per_run = {k: int(v) for k, v in (item.split("=") for item in args.epochs_for.split(",") if item)}
    unknown = (set(per_run) | set(args.only.split(",") if args.only else ())) - set(RUNS)
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; known: {', '.join(RUNS)}")
    data = ppvae.load_dataset(args.dataset, args.data_root, limit=args.limit)
    names = args.only.split(",") if args.only else list(RUNS)
    extra = {k: getattr(args, k) for k in (*STYLE_OPTIONS, *SEMI_OPTIONS)}
    up = max(1, 28 // max(data.image_shape))
    panels = {}
    for name in names:
        t0 = time.perf_counter()
        model, guide, history = train(name, data, epochs=per_run.get(name, args.epochs), hidden=hidden, out=out,
                                      seed=args.seed, lr=args.lr, betas=(args.beta1, 0.999), batch_size=args.batch_size,
                                      progress=args.progress, supervised_lr=args.supervised_lr,
                                      lr_schedule=args.lr_schedule, lr_gamma=args.lr_gamma, extra=extra)
        if RUNS[name][2] in ("semi", "cluster", "heads"):
            settings = {**{k: getattr(args, k) for k in ("lr", "lr_schedule", "lr_gamma", "beta1", "supervised_lr",
                                                         "batch_size", "seed", "hidden")}, **extra}
            r = evaluate(name, model, guide, data, history, out / name, up, settings)
            paper = f" (paper {PAPER[name]:.2f}%)" if name in PAPER else ""
            print(f"{name}: test error {100 * r['error']:.2f}%{paper} after {r['epochs']} epochs, {r['wall_s']:.0f} s", flush=True)
            tables = write_tables(out, Path(args.results) if args.results else None)
            if tables:  # only with --results
                print("wrote " + ", ".join(map(str, tables)), flush=True)
        if RUNS[name][2] in ("heads", "vae", "aae"):
            panels[name] = embedding_panel(name, model, guide, data)
        print(f"{name}: {time.perf_counter() - t0:.0f} s this session", flush=True)
    order = [n for n in ("heads-2d", "vae-2d", "aae-2d") if n in panels]
    if order:
        path = save_codes_against_priors([panels[n] for n in order], out / "embeddings.png", ncols=len(order))
        print(f"wrote {path}")
    curves = save_error_curves(out)
    if curves is not None:
        print(f"wrote {curves}")
    (out / "settings.json").write_text(json.dumps(vars(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
