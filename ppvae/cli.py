"""The ``ppvae`` command line: ``list``, ``train``, ``evaluate``, ``sample``.

    ppvae train --dataset digits --epochs 50 --out runs/digits
    ppvae evaluate runs/digits
    ppvae sample runs/digits --num 64
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from ppvae.errors import PPVAEError

EXTRA_COMMANDS: list = ["ppvae.reproduce.cli"]  # modules (or import paths) with add_parser(subparsers)


def _parse_options(pairs: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs -> a dict of model options (``flag`` names the option in errors:
    ``--objective-option`` pairs are read the same way).

    VALUE is read as JSON (``z_dims=[2]``, ``normalize=true``, ``activation="relu"``); a VALUE that
    is not JSON is kept as the bare string (``activation=relu``). The types are checked afterwards
    against the family's config dataclass (``ppvae.options.coerce_options``, which
    ``registry.make_config`` calls): ``z_dims=two`` or ``z_dims="12"`` is a clear ConfigError
    there, never a traceback or a string split into characters.
    """
    from ppvae.errors import ConfigError

    out = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE (VALUE as JSON, e.g. {_EXAMPLES.get(flag, 'x=1')}), got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:  # json.JSONDecodeError: a bare string such as activation=relu
            out[key] = value.strip()
    return out


_EXAMPLES = {"--set": "z_dims=[2]", "--objective-option": "alpha=0.5"}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--limit 0`` or ``--epochs -1`` are refused, not reinterpreted)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}; omit the option for its default")
    return value


def positive_limit(text: str) -> int:
    """argparse type of ``--limit`` (a number of datapoints): an integer >= 1. ``--limit 0`` is
    refused rather than read as "all" (or as "none"): leaving the option out means all."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--limit must be a positive number of datapoints; omit it for all (got {text!r})")
    return value


def cmd_list(args) -> int:
    from ppvae.data import DATASETS
    from ppvae.grad_estimators import GRAD_ESTIMATORS
    from ppvae.objectives import OBJECTIVES, objective_options
    from ppvae.registry import FAMILIES

    print("models:")
    for name, fam in FAMILIES.items():
        print(f"  {name:<12} {fam.description}")
    print("objectives (--objective NAME, options --objective-option KEY=VALUE, --grad-estimator NAME):")
    for name, cls in OBJECTIVES.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in objective_options(cls).items())
        print(f"  {name:<14} {cls.summary or (cls.__doc__ or '').strip().splitlines()[0]}")
        print(f"  {'':<14} options: {opts or 'none'}; grad estimators: {', '.join(cls.grad_estimators)}")
    print("grad estimators:")
    for name, what in GRAD_ESTIMATORS.items():
        print(f"  {name:<14} {what}")
    from ppvae.schemes import SCHEMES

    print("schemes:     " + ", ".join(SCHEMES) + "  (or your own ppvae.schemes.Scheme through the API)")
    print("datasets:    " + ", ".join(DATASETS) + "  (or --data FILE.npy/.npz)")
    return 0


# CLI option -> TrainConfig field. Every training option defaults to None on the command line, so
# that `--resume` can tell what the user asked for from what the checkpoint recorded.
TRAIN_OPTIONS = {
    "objective": "objective", "num_particles": "num_particles", "grad_estimator": "grad_estimator",
    "epochs": "epochs", "batch_size": "batch_size",
    "lr": "lr", "lr_schedule": "lr_schedule", "schedule_scale": "schedule_scale", "adam_eps": "adam_eps",
    "weight_decay": "weight_decay",
    "kl_warmup": "kl_warmup_epochs", "grad_clip": "grad_clip", "patience": "early_stopping_patience",
    "seed": "seed", "device": "device", "scheme": "scheme", "compile": "compile",
}
DATA_OPTIONS = {"dataset": "name", "data": "file", "data_root": "root", "limit": "limit"}  # -> meta["dataset"]


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from ppvae.train import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None, help="named dataset (see `ppvae list`; default: digits, offline)")
    g.add_argument("--data", default=None, help="your own data: a .npy (N, D) or .npz (x_train, x_test[, x_valid]) file")
    g.add_argument("--data-root", default=None, help="folder holding the datasets (default: $PPVAE_DATA, then ~/.cache/ppvae)")
    g.add_argument("--download", action="store_true", help="let torchvision download MNIST / Fashion-MNIST if missing")
    g.add_argument("--limit", type=positive_int, default=None, help="use only the first N rows of each split (quick runs; default: all)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="model family (see `ppvae list`; default: vae)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option, VALUE as JSON: --set z_dims=[2] --set stochastic_layers=2")
    g = p.add_argument_group("training (defaults in brackets; with --resume, the run's own settings)")
    g.add_argument("--scheme", default=None, help=f"training scheme (see `ppvae list`) [{d.scheme}: the model's own, else bound]")
    from ppvae.grad_estimators import GRAD_ESTIMATORS
    from ppvae.objectives import OBJECTIVES

    g.add_argument("--objective", default=None, help=f"{' | '.join(OBJECTIVES)} (see `ppvae list`) [{d.objective}]")
    g.add_argument("-k", "--num-particles", type=positive_int, default=None, help=f"samples per datapoint (k for iwae, L for the ELBOs) [{d.num_particles}]")
    g.add_argument("--objective-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the objective, VALUE as JSON: alpha=0.5 (renyi), groups=8 (miwae, piwae: "
                        "k = groups x K), beta=0.5 (ciwae); repeatable [the objective's defaults]")
    g.add_argument("--grad-estimator", default=None, choices=list(GRAD_ESTIMATORS),
                   help=f"the guide's gradient estimator: reparam, stl (elbo), dreg (iwae, renyi) [{d.grad_estimator}]")
    g.add_argument("--epochs", type=positive_int, default=None, help=f"[{d.epochs}]")
    g.add_argument("--batch-size", type=positive_int, default=None, help=f"[{d.batch_size}]")
    g.add_argument("--lr", type=float, default=None, help=f"[{d.lr}]")
    g.add_argument("--lr-schedule", default=None, help=f"constant | iwae (3^i-epoch stages) | exponential | cosine [{d.lr_schedule}]")
    g.add_argument("--schedule-scale", type=float, default=None, help=f"iwae schedule: stage lengths times this [{d.schedule_scale}]")
    g.add_argument("--adam-eps", type=float, default=None, help=f"[{d.adam_eps}]")
    g.add_argument("--weight-decay", type=float, default=None,
                   help=f"L2 penalty on the weights, Adam's weight_decay: the MAP baseline of the AEVB report [{d.weight_decay}]")
    g.add_argument("--kl-warmup", type=float, default=None, help=f"epochs of linear KL warm-up [{d.kl_warmup_epochs}]")
    g.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm to this positive value [no clipping]")
    g.add_argument("--patience", type=positive_int, default=None, help="early stopping after this many epochs without a better valid metric [none]")
    g.add_argument("--seed", type=int, default=None, help=f"seeds the initial weights, batches and latents [{d.seed}]")
    g.add_argument("--device", default=None, help=f"auto | cpu | cuda | cuda:N [{d.device}]")
    g.add_argument("--compile", action="store_const", const=True, default=None,
                   help="torch.compile the loss: as fast as hand-written PyTorch on small networks, same random "
                        "numbers; the first steps compile (seconds to a minute); bound scheme, built-in families [off]")
    g.add_argument("--out", default="runs/latest", help="run folder: checkpoints, metrics.jsonl, figures [runs/latest]")
    g.add_argument("--resume", nargs="?", const="last", choices=["last", "best"], default=None,
                   help="continue the run in --out from last.pt (or `--resume best`); its settings come from the checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out (default: refuse)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_training_data(args):
    from ppvae.data import load_dataset, load_file
    from ppvae.runs import dataset_meta

    if args.data:
        return load_file(args.data, seed=args.seed), dataset_meta(None, str(Path(args.data).resolve()), None, seed=args.seed)
    root = str(Path(args.data_root).resolve()) if args.data_root else None
    data = load_dataset(args.dataset, root, download=args.download, limit=args.limit)
    return data, dataset_meta(args.dataset, None, root, limit=args.limit)


def _resume_settings(args, ckpt: dict) -> tuple[dict, dict]:
    """The checkpoint's train config and meta; an option the user gave that contradicts them is an
    error naming it (epochs, patience, device may change)."""
    from ppvae.train import RESUMABLE_CHANGES

    config, meta = dict(ckpt["train_config"]), dict(ckpt.get("meta") or {})
    if "family" not in meta:
        raise PPVAEError(f"{args.out} was not written by `ppvae train` (no model family recorded): resume it with ppvae.fit")
    spec = meta.get("dataset") or {}
    given = {**{f"--{k.replace('_', '-')}": (getattr(args, k), config.get(f)) for k, f in TRAIN_OPTIONS.items()
                if f not in RESUMABLE_CHANGES and f != "scheme"},
             **{f"--{k.replace('_', '-')}": (getattr(args, k), spec.get(f)) for k, f in DATA_OPTIONS.items()},
             "--model": (args.model, meta["family"])}
    if args.data_root:
        given["--data-root"] = (str(Path(args.data_root).resolve()), spec.get("root"))
    if args.data:
        given["--data"] = (str(Path(args.data).resolve()), spec.get("file"))
    options = _parse_options(args.set)
    for key, value in options.items():
        given[f"--set {key}"] = (value, (meta.get("model_options") or {}).get(key))
    for key, value in _parse_options(args.objective_option, "--objective-option").items():
        given[f"--objective-option {key}"] = (value, (config.get("objective_options") or {}).get(key))
    conflicts = [f"{opt} {new!r} (the run has {old!r})" for opt, (new, old) in given.items()
                 if new is not None and _plain(new) != _plain(old)]
    if conflicts:
        raise PPVAEError("--resume continues a run with its own settings; these options contradict it: "
                         + "; ".join(conflicts) + ". Drop them, or train a new run in another --out")
    for k in ("epochs", "patience", "device"):
        if getattr(args, k) is not None:
            config[TRAIN_OPTIONS[k]] = getattr(args, k)
    return config, meta


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _scheme_label(config, model) -> str:
    from ppvae.schemes import get_scheme

    scheme = get_scheme(config.scheme, model).name
    if scheme != "bound":
        return f"scheme {scheme}"
    opts = "".join(f", {k}={v}" for k, v in config.objective_options.items())
    est = f", {config.grad_estimator} gradients" if config.grad_estimator != "reparam" else ""
    return f"{config.objective}, k={config.num_particles}{opts}{est}"


def cmd_train(args) -> int:
    from ppvae.registry import build
    from ppvae.runs import load_data
    from ppvae.runs_state import RunFolder
    from ppvae.train import TrainConfig, fit, resolve_device

    out = Path(args.out)
    folder = RunFolder(out)  # a --out that cannot be written fails here, before any work
    if args.resume and args.overwrite:
        raise PPVAEError("--resume and --overwrite contradict each other: choose one")
    if args.resume:
        recorded, meta = _resume_settings(args, folder.checkpoint_to_resume(args.resume))
        recorded["progress"] = not args.no_progress
        config = TrainConfig(**recorded)
        data = load_data(meta["dataset"], download=args.download)
        model, guide, _ = build(meta["family"], meta["x_dim"], meta.get("model_options"), seed=config.seed)
    else:
        if not args.overwrite:
            folder.claim(overwrite=False)  # refuse an existing run now, not after loading the data
        args.dataset = args.dataset or "digits"
        settings = {f: getattr(args, k) for k, f in TRAIN_OPTIONS.items() if getattr(args, k) is not None}
        if args.objective_option:
            settings["objective_options"] = _parse_options(args.objective_option, "--objective-option")
        config = TrainConfig(**settings, progress=not args.no_progress)
        args.seed = config.seed if args.seed is None else args.seed
        data, data_spec = _load_training_data(args)
        family = args.model or "vae"
        options = _parse_options(args.set)
        options.setdefault("likelihood", data.likelihood)
        resolve_device(config.device)  # a bad --device fails before the networks are built
        # seed before building: the initial weights are part of what --seed fixes
        model, guide, _ = build(family, data.x_dim, options, seed=config.seed)
        meta = {"family": family, "model_options": options, "x_dim": data.x_dim, "dataset": data_spec,
                "image_shape": list(data.image_shape), "likelihood": data.likelihood}
    device = resolve_device(config.device)
    from ppvae import distributed as pdist

    joined = pdist.init_from_environment(device)  # under torchrun: one process per rank, rank 0 talks
    if joined and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        config.device = str(device)
    rank, world = pdist.world()
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"{'resuming' if args.resume else 'training'} {meta['family']} ({_scheme_label(config, model)}) on {data.name}: "
        f"{len(data)} train / {data.split('valid').shape[0]} valid, device {device}"
        f"{f', {world} processes' if world > 1 else ''}, out {out}")
    result = fit(model, guide, data, config, out_dir=out, resume=args.resume or False, overwrite=args.overwrite, meta=meta,
                 callbacks=[lambda m: print(_epoch_line(m), flush=True)] if args.no_progress else [])
    if rank == 0:
        _report_training(result, config, model, meta, out, args.no_progress, device)
    if joined:
        pdist.shutdown()  # the other ranks wait here while rank 0 draws its figures
    return 0


def _report_training(result, config, model, meta, out, no_progress, device) -> None:
    """Rank 0's last words on a finished run: the final epoch, early stopping, curves and samples."""
    from ppvae.analysis import sample
    from ppvae.plots import save_image_grid, save_training_curves

    if result.message:
        print(result.message)
        return
    last = result.history[-1]
    if not no_progress:  # with --no-progress each epoch was printed already
        print(_epoch_line(last))
    if result.stopped_early:
        print(f"stopped early after epoch {last['epoch']}: no better validation metric for {config.early_stopping_patience} epochs")
    save_training_curves(result.history, out / "training_curves.png")
    shape = tuple(meta["image_shape"])
    x = sample(model, 64, meta["x_dim"], device=device)
    save_image_grid(x, shape, out / "samples.png", upscale=_upscale(shape))
    print(f"wrote {out / 'last.pt'}, {out / 'best.pt'}, {out / 'metrics.jsonl'}, {out / 'training_curves.png'}, {out / 'samples.png'}")


def _epoch_line(m: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())


def _upscale(image_shape) -> int:
    return max(1, 28 // max(image_shape))


def cmd_evaluate(args) -> int:
    from ppvae.analysis import posterior_means, reconstruct
    from ppvae.device import resolve_device
    from ppvae.evaluate import evaluate_pair, format_report
    from ppvae.paths import ensure_writable_dir
    from ppvae.plots import save_latent_scatter, save_manifold, save_reconstructions
    from ppvae.runs import load_data, load_pair

    device = resolve_device(args.device)
    checkpoint = _checkpoint_file(args.run, args.checkpoint)
    # Where the report goes is checked (created, written to) now, not after minutes of evaluation.
    if args.out:
        out = ensure_writable_dir(args.out, what="--out folder")
    else:
        out = ensure_writable_dir(checkpoint_dir(args.run), what="run folder (the default --out)")
    model, guide, ckpt = load_pair(checkpoint, device)
    meta = ckpt["meta"]
    data = load_data(meta["dataset"])
    x = data.split(args.split)
    labels = data.labels(args.split)
    if args.limit is not None:
        x, labels = x[: args.limit], (labels[: args.limit] if labels is not None else None)
    x = x.to(device)
    from ppvae import distributed as pdist
    from ppvae.evaluate_samples import (format_sample_report, likelihood_unavailable, needs_labels,
                                         reconstruction_report, sample_report)

    joined = pdist.init_from_environment(device)  # under torchrun, log p(x) is sharded over the ranks
    rank = pdist.world()[0]
    label_kw = {}
    if needs_labels(model):
        if labels is None:
            raise PPVAEError(f"this {meta['family']} model takes labels, but the {args.split} split has none")
        label_kw = {"y": labels.to(device)}
    torch.manual_seed(args.seed)
    reason = ("the model takes labels; importance sampling per labelled datapoint is not supported"
              if label_kw else likelihood_unavailable(model, guide, x))
    if reason is None:
        report = evaluate_pair(model, guide, x, num_samples=args.num_samples, iwae_k=args.k)
    else:
        report = {**reconstruction_report(model, guide, x, **label_kw), "log_px_unavailable": reason}
    free = reason is not None  # a model without a likelihood is judged by its samples
    parzen = args.parzen == "on" or (args.parzen == "auto" and free)
    # auto: only for models that have nothing better than their samples (the MNIST CNN is trained
    # on first use, ~2 CPU-minutes: not a cost to add silently to every VAE evaluation)
    quality = args.sample_quality == "on" or (args.sample_quality == "auto" and free and data.labels("train") is not None)
    if parzen or quality:
        torch.manual_seed(args.seed)
        report.update(sample_report(model, data, x, num_samples=args.model_samples, parzen=parzen, quality=quality,
                                    data_root=(meta["dataset"] or {}).get("root"),
                                    num_classes=getattr(getattr(model, "config", None), "num_classes", None) if label_kw else None))
    report.update({"run": str(args.run), "epoch": ckpt["epoch"], "split": args.split, "dataset": data.name,
                   "family": meta["family"], "scheme": (ckpt.get("scheme") or {}).get("name", "bound"),
                   "objective": ckpt["train_config"]["objective"], "num_particles": ckpt["train_config"]["num_particles"],
                   "objective_options": ckpt["train_config"].get("objective_options", {}),
                   "grad_estimator": ckpt["train_config"].get("grad_estimator", "reparam")})
    if rank > 0:
        if joined:
            pdist.shutdown()  # wait for rank 0's report, then leave the group together
        return 0
    (out / "report.json").write_text(json.dumps(report, indent=2))
    shape, up = tuple(meta["image_shape"]), _upscale(meta["image_shape"])
    figures = [save_reconstructions(x[:16], reconstruct(model, guide, x[:16], **{k: v[:16] for k, v in label_kw.items()}),
                                    shape, out / "reconstructions.png", upscale=up)]
    z = posterior_means(guide, x[:5000], **{k: v[:5000] for k, v in label_kw.items()})
    first = next(iter(z.values()))
    figures.append(save_latent_scatter(first, out / "latent_scatter.png", labels=labels[:5000] if labels is not None else None, title=f"{data.name} {args.split}: E_q[z|x]"))
    if first.shape[-1] == 2 and hasattr(model, "decode") and not label_kw:
        figures.append(save_manifold(model.decode, shape, out / "manifold.png", upscale=up, device=device))
    if reason is None:
        print(format_report(report))
    extra = format_sample_report(report)
    if extra:
        print(extra)
    print("wrote " + ", ".join(str(p) for p in [out / "report.json", *figures]))
    if joined:
        pdist.shutdown()
    return 0


def cmd_sample(args) -> int:
    from ppvae.analysis import sample
    from ppvae.device import resolve_device
    from ppvae.errors import ConfigError
    from ppvae.paths import ensure_writable_dir
    from ppvae.plots import save_image_grid
    from ppvae.runs import load_pair

    device = resolve_device(args.device)
    checkpoint = _checkpoint_file(args.run, args.checkpoint)
    out = Path(args.out) if args.out else checkpoint_dir(args.run) / "samples.png"
    if out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a folder; `ppvae sample` writes one PNG: give a file path such as {str(out / 'samples.png')!r}")
    ensure_writable_dir(out.parent, what="folder of --out" if args.out else "run folder")
    model, guide, ckpt = load_pair(checkpoint, device)
    meta = ckpt["meta"]
    torch.manual_seed(args.seed)
    x = sample(model, args.num, meta["x_dim"], mean=not args.binary, device=device)
    save_image_grid(x, tuple(meta["image_shape"]), out, upscale=_upscale(meta["image_shape"]))
    print(f"wrote {out}")
    return 0


def checkpoint_dir(run) -> Path:
    """The folder of a run: ``run`` itself if a folder, else the folder of the checkpoint file."""
    p = Path(run)
    return p if p.is_dir() else p.parent


def _checkpoint_file(run, which: str) -> Path:
    """The checkpoint ``evaluate`` / ``sample`` will load, known to exist before any output is prepared."""
    from ppvae.errors import CheckpointError
    from ppvae.runs import checkpoint_path

    path = checkpoint_path(run, which)  # a run folder without best.pt / last.pt raises here
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: pass the run folder written by `ppvae train --out DIR` "
                              "(it holds last.pt and best.pt) or the path of a .pt file")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppvae", description="Generative autoencoders as Pyro model/guide pairs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list model families, objectives and datasets").set_defaults(func=cmd_list)
    p = sub.add_parser("train", help="train a model/guide pair", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)
    for name, func, helptext in (("evaluate", cmd_evaluate, "evaluate a trained run: bounds, log p(x), diagnostics, figures"),
                                 ("sample", cmd_sample, "write a grid of samples from a trained run")):
        p = sub.add_parser(name, help=helptext, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("run", help="run folder written by `ppvae train --out` (or a .pt checkpoint)")
        p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint of the run")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="output folder (evaluate) or PNG path (sample), checked before any work; default: the run folder")
        if name == "evaluate":
            p.add_argument("--num-samples", type=positive_int, default=5000, help="importance samples per datapoint for log p(x)")
            p.add_argument("-k", type=positive_int, default=50, help="k of the reported IWAE bound")
            p.add_argument("--split", default="test", choices=["train", "valid", "test"])
            p.add_argument("--parzen", default="auto", choices=["auto", "on", "off"],
                           help="Parzen-window log-likelihood of model samples (auto: when log p(x) cannot be estimated)")
            p.add_argument("--sample-quality", default="auto", choices=["auto", "on", "off"],
                           help="classifier score and Frechet distance of model samples (ppvae's MNIST CNN on MNIST, else an MLP "
                                "trained on the dataset); auto: for models without a likelihood")
            p.add_argument("--model-samples", type=positive_int, default=10_000, help="model samples for --parzen / --sample-quality")
            p.add_argument("--limit", type=positive_limit, default=None, help="evaluate only the first N datapoints (default: all)")
        else:
            p.add_argument("--num", type=positive_int, default=64, help="number of samples")
            p.add_argument("--binary", action="store_true", help="draw x ~ p(x|z) instead of showing its mean")
        p.set_defaults(func=func)
    for module in EXTRA_COMMANDS:  # import paths are imported here, late: no import cycle with ppvae.cli
        module = importlib.import_module(module) if isinstance(module, str) else module
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PPVAEError as e:  # bad input: one clear line, no stack trace
        print(f"ppvae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ppvae {args.command}: interrupted; `ppvae train --resume` continues from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
