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


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise PPVAEError(f"--set expects KEY=VALUE (VALUE as JSON, e.g. z_dims=[2]), got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value  # a bare string such as activation=relu
    return out


def cmd_list(args) -> int:
    from ppvae.data import DATASETS
    from ppvae.objectives import OBJECTIVES
    from ppvae.registry import FAMILIES

    print("models:")
    for name, fam in FAMILIES.items():
        print(f"  {name:<12} {fam.description}")
    print("objectives:  " + ", ".join(OBJECTIVES))
    print("datasets:    " + ", ".join(DATASETS) + "  (or --data FILE.npy/.npz)")
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from ppvae.train import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", help="named dataset (see `ppvae list`; default: digits, offline)")
    g.add_argument("--data", default=None, help="your own data: a .npy (N, D) or .npz (x_train, x_test[, x_valid]) file")
    g.add_argument("--data-root", default=None, help="folder holding the datasets (default: $PPVAE_DATA, then ~/.cache/ppvae)")
    g.add_argument("--download", action="store_true", help="let torchvision download MNIST / Fashion-MNIST if missing")
    g.add_argument("--limit", type=int, default=None, help="use only the first N rows of each split (quick runs)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="vae", help="model family (see `ppvae list`)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option, VALUE as JSON: --set z_dims=[2] --set stochastic_layers=2")
    g = p.add_argument_group("training")
    g.add_argument("--objective", default=d.objective, help="elbo | elbo-analytic | iwae")
    g.add_argument("-k", "--num-particles", type=int, default=d.num_particles, help="samples per datapoint (k for iwae, L for the ELBOs)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--lr-schedule", default=d.lr_schedule, help="constant | iwae (3^i-epoch stages) | exponential | cosine")
    g.add_argument("--schedule-scale", type=float, default=d.schedule_scale, help="iwae schedule: stage lengths times this")
    g.add_argument("--adam-eps", type=float, default=d.adam_eps)
    g.add_argument("--kl-warmup", type=float, default=d.kl_warmup_epochs, help="epochs of linear KL warm-up")
    g.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm")
    g.add_argument("--patience", type=int, default=None, help="early stopping after this many epochs without a better valid bound")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help="auto | cpu | cuda")
    g.add_argument("--out", default="runs/latest", help="run folder: checkpoints, metrics.jsonl, figures")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_training_data(args):
    from ppvae.data import load_dataset, load_file
    from ppvae.runs import dataset_meta

    if args.data:
        return load_file(args.data, seed=args.seed), dataset_meta(None, str(Path(args.data).resolve()), None, seed=args.seed)
    root = str(Path(args.data_root).resolve()) if args.data_root else None
    data = load_dataset(args.dataset, root, download=args.download, limit=args.limit)
    return data, dataset_meta(args.dataset, None, root, limit=args.limit)


def cmd_train(args) -> int:
    from ppvae.plots import save_image_grid, save_training_curves
    from ppvae.analysis import sample
    from ppvae.registry import build
    from ppvae.train import TrainConfig, fit, resolve_device

    data, data_spec = _load_training_data(args)
    options = _parse_options(args.set)
    options.setdefault("likelihood", data.likelihood)
    model, guide, mconfig = build(args.model, data.x_dim, options)
    config = TrainConfig(
        objective=args.objective, num_particles=args.num_particles, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, lr_schedule=args.lr_schedule, schedule_scale=args.schedule_scale, adam_eps=args.adam_eps,
        kl_warmup_epochs=args.kl_warmup, grad_clip=args.grad_clip, early_stopping_patience=args.patience,
        seed=args.seed, device=args.device, progress=not args.no_progress,
    )
    meta = {"family": args.model, "model_options": options, "x_dim": data.x_dim, "dataset": data_spec,
            "image_shape": list(data.image_shape), "likelihood": data.likelihood}
    out = Path(args.out)
    print(f"training {args.model} ({args.objective}, k={args.num_particles}) on {data.name}: "
          f"{len(data)} train / {data.split('valid').shape[0]} valid, device {resolve_device(args.device)}, out {out}")
    result = fit(model, guide, data, config, out_dir=out, resume=args.resume, meta=meta,
                 callbacks=[lambda m: print(_epoch_line(m), flush=True)] if args.no_progress else [])
    last = result.history[-1] if result.history else {}
    if not args.no_progress or not last:  # with --no-progress each epoch was printed already
        print(_epoch_line(last) if last else "nothing to train (already at --epochs)")
    save_training_curves(result.history, out / "training_curves.png")
    x = sample(model, 64, data.x_dim, device=resolve_device(args.device))
    save_image_grid(x, data.image_shape, out / "samples.png", upscale=_upscale(data.image_shape))
    print(f"wrote {out / 'last.pt'}, {out / 'best.pt'}, {out / 'metrics.jsonl'}, {out / 'training_curves.png'}, {out / 'samples.png'}")
    return 0


def _epoch_line(m: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())


def _upscale(image_shape) -> int:
    return max(1, 28 // max(image_shape))


def cmd_evaluate(args) -> int:
    from ppvae.analysis import reconstruct
    from ppvae.evaluate import evaluate_pair, format_report
    from ppvae.plots import save_latent_scatter, save_manifold, save_reconstructions
    from ppvae.analysis import posterior_means
    from ppvae.runs import load_data, load_pair
    from ppvae.train import resolve_device

    device = resolve_device(args.device)
    model, guide, ckpt = load_pair(args.run, device, which=args.checkpoint)
    meta = ckpt["meta"]
    data = load_data(meta["dataset"])
    x = data.split(args.split)
    labels = data.labels(args.split)
    if args.limit:
        x, labels = x[: args.limit], (labels[: args.limit] if labels is not None else None)
    x = x.to(device)
    torch.manual_seed(args.seed)
    report = evaluate_pair(model, guide, x, num_samples=args.num_samples, iwae_k=args.k)
    report.update({"run": str(args.run), "epoch": ckpt["epoch"], "split": args.split, "dataset": data.name,
                   "family": meta["family"], "objective": ckpt["train_config"]["objective"],
                   "num_particles": ckpt["train_config"]["num_particles"]})
    out = Path(args.out) if args.out else Path(args.run if Path(args.run).is_dir() else Path(args.run).parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    shape, up = tuple(meta["image_shape"]), _upscale(meta["image_shape"])
    figures = [save_reconstructions(x[:16], reconstruct(model, guide, x[:16]), shape, out / "reconstructions.png", upscale=up)]
    z = posterior_means(guide, x[:5000])
    first = next(iter(z.values()))
    figures.append(save_latent_scatter(first, out / "latent_scatter.png", labels=labels[:5000] if labels is not None else None, title=f"{data.name} {args.split}: E_q[z|x]"))
    if first.shape[-1] == 2 and hasattr(model, "decode"):
        figures.append(save_manifold(model.decode, shape, out / "manifold.png", upscale=up, device=device))
    print(format_report(report))
    print("wrote " + ", ".join(str(p) for p in [out / "report.json", *figures]))
    return 0


def cmd_sample(args) -> int:
    from ppvae.analysis import sample
    from ppvae.plots import save_image_grid
    from ppvae.runs import load_pair
    from ppvae.train import resolve_device

    device = resolve_device(args.device)
    model, guide, ckpt = load_pair(args.run, device, which=args.checkpoint)
    meta = ckpt["meta"]
    torch.manual_seed(args.seed)
    x = sample(model, args.num, meta["x_dim"], mean=not args.binary, device=device)
    out = Path(args.out) if args.out else checkpoint_dir(args.run) / "samples.png"
    save_image_grid(x, tuple(meta["image_shape"]), out, upscale=_upscale(meta["image_shape"]))
    print(f"wrote {out}")
    return 0


def checkpoint_dir(run) -> Path:
    p = Path(run)
    return p if p.is_dir() else p.parent


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
        p.add_argument("--device", default="auto")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="output folder (evaluate) or PNG path (sample); default: the run folder")
        if name == "evaluate":
            p.add_argument("--num-samples", type=int, default=5000, help="importance samples per datapoint for log p(x)")
            p.add_argument("-k", type=int, default=50, help="k of the reported IWAE bound")
            p.add_argument("--split", default="test", choices=["train", "valid", "test"])
            p.add_argument("--limit", type=int, default=None, help="evaluate only the first N datapoints")
        else:
            p.add_argument("--num", type=int, default=64, help="number of samples")
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
