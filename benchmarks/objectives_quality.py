"""Quality per compute: the test NLL that IWAE k=5 reaches on MNIST in a fixed CPU budget with the
standard and the doubly reparameterized guide gradient, and MIWAE.

Every method trains the IWAE paper's one-layer model (``ppvae.build("vae", 784)``: 784-200-200-50
tanh MLPs, Bernoulli decoder) from the same initial weights on dynamically binarized MNIST, batch
100, Adam with ``TrainConfig``'s defaults, until this process has spent ``--cpu-seconds`` of CPU
time in its training loop (``time.process_time``: other jobs on a shared machine slow the wall
clock, not the budget). Then log p(x) of the first ``--test-points`` test digits (ppvae's fixed
binarization of the test split) is estimated with ``--num-samples`` importance samples and the
guide as proposal (``ppvae.log_likelihood``, the IWAE paper's k=5000 by default), with each point's
PSIS Pareto-k (above 0.7 the estimate is unreliable). Methods::

    iwae          IWAE k=5, reparameterized gradient               (Burda et al. 2016)
    iwae-dreg     IWAE k=5, doubly reparameterized guide gradient  (Tucker et al. 2019)
    miwae         MIWAE, M groups of K=5 (k = 5M; M = --miwae-groups) (Rainforth et al. 2018)

A step of MIWAE costs about M times one of IWAE k=5, so in the same budget it takes about 1/M
as many steps: the comparison is per CPU second, not per step. Printed: steps and epochs done,
the mean training bound over the last 100 steps, the test NLL with its standard error over test
points, the paired difference from ``iwae`` (the same test points), and Pareto-k.

    python benchmarks/objectives_quality.py --cpu-seconds 240 --test-points 1000 --num-samples 1000
    python benchmarks/objectives_quality.py --quick       # seconds; what tests/test_benchmarks.py runs

References:
  Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
  Tucker, Lawson, Gu & Maddison (2019), Doubly Reparameterized Gradient Estimators for Monte Carlo
  Objectives.
  Rainforth et al. (2018), Tighter Variational Bounds are Not Necessarily Better.
"""

from __future__ import annotations

import argparse
import datetime
import math
import shlex
import sys
import time
from pathlib import Path

import pyro
import torch

import ppvae
from ppvae.train import parameters_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import BATCH, BETAS, EPS, LR, load_average, load_binary_data, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "datasets"  # ../shared/datasets from the repository root
K = 5


def methods(groups: int) -> dict[str, tuple[str, int, str, dict]]:
    """label -> (objective, particles, grad estimator, options)"""
    return {
        "iwae": ("iwae", K, "reparam", {}),
        "iwae-dreg": ("iwae", K, "dreg", {}),
        "miwae": ("miwae", groups * K, "reparam", {"groups": groups}),
    }


def train(data, objective, budget: float, seed: int) -> dict:
    """Train a fresh 1-layer VAE with ``objective`` until ``budget`` CPU seconds are spent."""
    model, guide, _ = ppvae.build("vae", data.x_dim, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)  # the same batches for every method
    n = len(data)
    x0 = next(data.batches("train", BATCH, gen))[1]
    params = parameters_of(model, guide, x0)
    opt = torch.optim.Adam(params, lr=LR, betas=BETAS, eps=EPS)
    gen.manual_seed(seed + 1)
    torch.manual_seed(seed)
    steps, recent = 0, []
    start = time.process_time()
    with pyro.validation_enabled(False):
        while time.process_time() - start < budget:
            for _, x in data.batches("train", BATCH, gen):
                loss = objective.loss(model, guide, x, num_data=n)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                recent = (recent + [-loss.item() / n])[-100:]
                if time.process_time() - start >= budget:
                    break
    cpu = time.process_time() - start
    return {"model": model, "guide": guide, "steps": steps, "epochs": steps * BATCH / n, "cpu": cpu,
            "train_bound": sum(recent) / len(recent)}


def evaluate(model, guide, x: torch.Tensor, num_samples: int) -> dict:
    start = time.process_time()
    res = ppvae.log_likelihood(model, guide, x, num_samples=num_samples, diagnostics=True, seed=0)
    nll = -res.log_px.double()
    return {"nll": nll, "pareto_k": res.pareto_k, "cpu": time.process_time() - start}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cpu-seconds", type=float, default=600.0, help="training budget of each method, process CPU seconds")
    p.add_argument("--test-points", type=int, default=None, help="test digits to score (default: all 10,000)")
    p.add_argument("--num-samples", type=int, default=5000, help="importance samples per test digit")
    p.add_argument("--miwae-groups", type=int, default=2, help="M of MIWAE (M groups of K=5)")
    p.add_argument("--methods", default="iwae,iwae-dreg,miwae", help="comma-separated subset of iwae, iwae-dreg, miwae")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="folder holding MNIST/")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="initial weights, batches and latents (the same for every method)")
    p.add_argument("--quick", action="store_true", help="2 CPU seconds per method, 20 test points, 50 samples (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.cpu_seconds, args.test_points, args.num_samples = 2.0, 20, 50
    torch.set_num_threads(args.threads)
    table = methods(args.miwae_groups)
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in table]
    if unknown:
        p.error(f"unknown method {unknown[0]!r}; known: {', '.join(table)}")

    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(f"date {datetime.date.today()}, device cpu, {load_average()} at start")
    print(f"machine: {machine(torch.device('cpu'))}")
    data, source = load_binary_data(Path(args.data_root), args.quick, seed=args.seed)
    if data is None:
        if not args.quick:
            print(f"error: {source}; pass --data-root", file=sys.stderr)
            return 2
        data = ppvae.from_array((torch.rand(600, 784) < 0.3).float().numpy(), valid_fraction=0.0, test_fraction=0.1)
    test = data.split("test")[: args.test_points]
    print(f"data: {source}; {len(data)} training digits, {test.shape[0]} test digits scored with S={args.num_samples}")
    print(f"budget: {args.cpu_seconds:g} CPU s of training per method, batch {BATCH}, Adam lr {LR}, seed {args.seed}")

    results = {}
    for label in chosen:
        name, k, est, opts = table[label]
        objective = ppvae.get_objective(name, k, est, **opts)
        run = train(data, objective, args.cpu_seconds, args.seed)
        train_cpu = run["cpu"]
        with torch.no_grad():
            run.update(evaluate(run["model"], run["guide"], test, args.num_samples))
        results[label] = run
        print(f"done {label} ({objective!r}): {run['steps']} steps in {train_cpu:.0f} CPU s, "
              f"evaluated in {run['cpu']:.0f} CPU s", flush=True)

    base = results.get("iwae")
    print()
    print("| method | objective | steps | epochs | train bound (last 100 steps) | test NLL | vs iwae (paired) | Pareto-k > 0.7 | max k |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        name, k, est, opts = table[label]
        what = f"{name} k={k}" + "".join(f", {a}={b}" for a, b in opts.items()) + (f", {est}" if est != "reparam" else "")
        nll, n = r["nll"], r["nll"].numel()
        se = float(nll.std() / math.sqrt(n)) if n > 1 else float("nan")
        if base is not None and label != "iwae":
            d = nll - base["nll"]
            paired = f"{float(d.mean()):+.2f} ± {float(d.std() / math.sqrt(n)):.2f}"
        else:
            paired = "—"
        bad = float((r["pareto_k"] > 0.7).float().mean()) * 100
        print(f"| {label} | {what} | {r['steps']} | {r['epochs']:.1f} | {r['train_bound']:.2f} | "
              f"{float(nll.mean()):.2f} ± {se:.2f} | {paired} | {bad:.1f}% | {float(r['pareto_k'].max()):.2f} |")
    print(f"\n{load_average()} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
