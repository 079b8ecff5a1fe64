"""Scoring a VampPrior-sized mixture prior: ppvae's DiagonalNormalMixture against torch's
MixtureSameFamily, and its error against a float64 reference. Prints measured figures only.

    python benchmarks/mixture_prior.py [--points 20000] [--components 500] [--dim 40] [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

import pyro.distributions as dist
import torch

from ppvae.distributions import DiagonalNormalMixture

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import load_average, machine  # noqa: E402  (the sibling benchmark's machine line)


def median_seconds(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=20_000, help="z values scored (particles x datapoints)")
    p.add_argument("--components", type=int, default=500, help="K (the VampPrior's default)")
    p.add_argument("--dim", type=int, default=40, help="d (the IOP comparison's z)")
    p.add_argument("--min-scale", type=float, default=0.02, help="smallest component scale")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    args = p.parse_args(argv)
    if args.quick:
        args.points, args.components, args.rounds = 500, 50, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k, d = args.components, args.dim
    loc = torch.randn(k, d) * 2
    scale = torch.rand(k, d) * 0.5 + args.min_scale
    ours = DiagonalNormalMixture(loc, scale)
    torchs = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(k)), dist.Normal(loc, scale).to_event(1))
    exact = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(k).double()),
                                   dist.Normal(loc.double(), scale.double()).to_event(1))
    z = exact.sample((args.points,)).float()  # from the mixture: where the expanded square cancels most
    with torch.no_grad():
        t_ours = median_seconds(lambda: ours.log_prob(z), args.rounds)
        t_torch = median_seconds(lambda: torchs.log_prob(z), args.rounds)
        ref = exact.log_prob(z.double())
        err_ours = (ours.log_prob(z).double() - ref).abs().max().item()
        err_torch = (torchs.log_prob(z).double() - ref).abs().max().item()
    print(f"mixture prior benchmark: {args.points} points x K={k} components x d={d}, median of {args.rounds}")
    print(f"date {datetime.date.today()}, device cpu")
    print(f"machine: {machine(torch.device('cpu'))}")
    print(f"{load_average()} at start; command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{'':28s} {'seconds':>9s} {'max |error| vs float64 (nats)':>31s}")
    print(f"{'DiagonalNormalMixture':28s} {t_ours:9.3f} {err_ours:31.2e}")
    print(f"{'MixtureSameFamily':28s} {t_torch:9.3f} {err_torch:31.2e}")
    print(f"speed-up: {t_torch / t_ours:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
