"""``ppvae reproduce iwae-table1`` and ``ppvae reproduce iwae-continuation``.

    ppvae reproduce iwae-table1 --budget quick --out runs/iwae-quick --data-root ../shared/datasets
    ppvae reproduce iwae-table1 --budget medium --cells vae-k5-L1,iwae-k5-L1 --out runs/iwae-medium
    ppvae reproduce iwae-table1 --table-only --out runs/iwae-medium
    ppvae reproduce iwae-continuation --budget quick -k 5 --out runs/iwae-quick
    ppvae reproduce iop-comparison --budget quick --datasets mnist,frey-face --out runs/iop-quick
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", default="quick",
                   help="quick: CI machinery check (seconds); medium: the schedule 81x shorter (44 epochs); "
                        "fast: batch 100 with a cosine learning-rate decay over 2500 epochs; fast-N: the same decay over N "
                        "epochs (e.g. fast-1000); paper: 3280 epochs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", required=True, help="output folder: OUT/<binarization>/<cell>/ per cell, OUT/table.md")
    p.add_argument("--binarization", default="dynamic", choices=["dynamic", "fixed"],
                   help="dynamic: MNIST resampled per batch (Table 1); fixed: Larochelle & Murray's binarized MNIST (Appendix D)")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/ and BinarizedMNIST/ (default: $PPVAE_DATA, then ~/.cache/ppvae)")
    p.add_argument("--eval-samples", type=int, default=None, help="importance samples per test point (default: the budget's; paper 5000)")
    p.add_argument("--eval-points", type=int, default=None, help="evaluate the first N test points (default: the budget's; all for medium/paper)")
    p.add_argument("--batch-size", type=int, default=None, help="override the budget's batch size (paper: 20); a cell's folder keeps its first choice")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each cell's loss (TrainConfig.compile: same random numbers, faster steps; "
                        "a run may switch on resume)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="paper reproduction harnesses (IWAE Table 1, continuation, IOP learned-prior comparison)")
    sub = p.add_subparsers(dest="experiment", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    t = sub.add_parser("iwae-table1", help="Burda et al. 2016 Table 1: VAE/IWAE x k in {1,5,50} x {1,2} layers", formatter_class=fmt)
    _common(t)
    t.add_argument("--cells", default=None, help="comma-separated cells to run (default: all 10), e.g. k1-L1,vae-k5-L1,iwae-k50-L2")
    t.add_argument("--table-only", action="store_true", help="only rebuild OUT/table.md and OUT/table.csv from the result.json files present")
    t.set_defaults(func=cmd_iwae_table1)
    c = sub.add_parser("iwae-continuation", help="train with VAE then continue with IWAE (and the reverse), NLL and active units before/after", formatter_class=fmt)
    _common(c)
    c.add_argument("-k", type=int, default=50, help="k of both objectives")
    c.add_argument("--layers", type=int, default=1, choices=[1, 2])
    c.add_argument("--directions", default="vae,iwae", help="first objectives to run: vae (VAE->IWAE), iwae (IWAE->VAE)")
    c.add_argument("--continue-epochs", type=int, default=None, help="stage-2 epochs (default: the budget's last schedule stage: quick 1, medium 27, paper 2187)")
    c.add_argument("--continue-lr", type=float, default=1e-4, help="stage-2 constant learning rate")
    c.add_argument("--controls", action="store_true",
                   help="also run each direction's control: stage 2 on the first objective (same epochs and lr), so the "
                        "effect of the switch is not confounded with training longer")
    c.set_defaults(func=cmd_iwae_continuation)
    _add_iop_comparison(sub, fmt)


def _setup(args):
    import torch

    from ppvae.reproduce.common import DATASET_OF, load_iwae_data
    from ppvae.reproduce.iwae_table1 import get_budget
    from ppvae.runs import dataset_meta
    from ppvae.train import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = get_budget(args.budget)
    device = resolve_device(args.device)
    root = str(Path(args.data_root).resolve()) if args.data_root else None
    data = load_iwae_data(args.binarization, root, budget.limit, valid_size=0, seed=args.seed)
    spec = dataset_meta(DATASET_OF[args.binarization], None, root, limit=budget.limit, valid_size=0, seed=args.seed)
    kwargs = dict(binarization=args.binarization, data_spec=spec, device=device, eval_samples=args.eval_samples,
                  eval_points=args.eval_points, seed=args.seed, batch_size=args.batch_size,
                  compile=args.compile, log=lambda s: print(s, flush=True))
    print(f"budget {budget.name}: {budget.description}; {len(data)} training images ({args.binarization} binarization), "
          f"device {device}", flush=True)
    return budget, data, kwargs


def cmd_iwae_table1(args) -> int:
    from ppvae.reproduce.iwae_table1 import parse_cells, render_markdown, run_table1, write_table

    out = Path(args.out)
    if not args.table_only:
        cells = parse_cells(args.cells)
        budget, data, kwargs = _setup(args)
        run_table1(cells, budget, data, out, **kwargs)
    rows = write_table(out)
    print(render_markdown(rows))
    print(f"wrote {out / 'table.md'}, {out / 'table.csv'}")
    return 0


def cmd_iwae_continuation(args) -> int:
    from ppvae.errors import ConfigError
    from ppvae.reproduce.iwae_continuation import run_continuation, write_continuation_table

    firsts = [s.strip() for s in args.directions.split(",") if s.strip()]
    if not firsts or any(f not in ("vae", "iwae") for f in firsts):
        raise ConfigError(f"--directions takes vae and/or iwae, got {args.directions!r}")
    budget, data, kwargs = _setup(args)
    for first in firsts:
        for control in (False, True) if args.controls else (False,):
            run_continuation(first, args.k, args.layers, budget, data, Path(args.out), continue_epochs=args.continue_epochs,
                             continue_lr=args.continue_lr, control=control, **kwargs)
    write_continuation_table(Path(args.out))
    print((Path(args.out) / "continuation.md").read_text())
    print(f"wrote {Path(args.out) / 'continuation.md'}, {Path(args.out) / 'continuation.csv'}")
    return 0


def _add_iop_comparison(sub, fmt) -> None:
    i = sub.add_parser("iop-comparison", help="Takahashi et al. 2019: standard VAE vs VampPrior vs implicit optimal prior, MNIST and Frey Face", formatter_class=fmt)
    i.add_argument("--budget", default="quick", choices=["quick", "medium", "warmup", "paper"],
                   help="quick: CI machinery check; medium: MNIST 20 epochs with a 10-epoch KL warm-up, Frey Face <=500 epochs with a 100-epoch warm-up and patience 50; warmup: MNIST the authors' 100-epoch warm-up run to its end (100 epochs), Frey Face as medium; paper: warm-up 100, patience 50, <=2000 epochs")
    i.add_argument("--datasets", default="mnist,frey-face", help="comma-separated: mnist (dynamically binarized), frey-face")
    i.add_argument("--device", default="auto", help="auto | cpu | cuda")
    i.add_argument("--out", required=True, help="output folder: OUT/<dataset>/<prior>/ per cell, OUT/table.md")
    i.add_argument("--cells", default=None, help="comma-separated PRIOR or DATASET/PRIOR (vae, vampprior, iop), e.g. iop,mnist/vae")
    i.add_argument("--table-only", action="store_true", help="only rebuild OUT/table.md and OUT/table.csv from the result.json files present")
    i.add_argument("--data-root", default=None, help="folder holding MNIST/ and FreyFace/ (default: $PPVAE_DATA, then ~/.cache/ppvae)")
    i.add_argument("--eval-samples", type=int, default=None, help="the large k of log p(x) (default: the budget's; 5000 at medium/paper); k=10 is always also reported")
    i.add_argument("--eval-points", type=int, default=None, help="evaluate the first N test points (default: the budget's)")
    i.add_argument("--re-evaluate", action="store_true", help="evaluate finished cells again (no training), e.g. after the evaluator changed")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    i.set_defaults(func=cmd_iop_comparison)


def cmd_iop_comparison(args) -> int:
    import torch

    from ppvae.reproduce.iop_comparison import get_budget, parse_cells, render_markdown, run_comparison, write_table
    from ppvae.train import resolve_device

    out = Path(args.out)
    if not args.table_only:
        if args.threads:
            torch.set_num_threads(args.threads)
        budget = get_budget(args.budget)
        cells = parse_cells(args.cells, [d.strip() for d in args.datasets.split(",") if d.strip()])
        device = resolve_device(args.device)
        root = str(Path(args.data_root).resolve()) if args.data_root else None
        print(f"budget {budget.name}: {budget.description}; device {device}", flush=True)
        run_comparison(cells, budget, out, data_root=root, seed=args.seed, device=device, eval_samples=args.eval_samples,
                       eval_points=args.eval_points, re_evaluate=args.re_evaluate, log=lambda s: print(s, flush=True))
    rows = write_table(out)
    print(render_markdown(rows))
    print(f"wrote {out / 'table.md'}, {out / 'table.csv'}")
    return 0
