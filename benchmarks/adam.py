"""Time of one Adam step over the IWAE paper's one-layer VAE: torch's three Adam implementations.

``ppvae.fit`` builds each parameter group's optimizer with ``ParamGroup.optimizer``, which asks for
torch's fused Adam (one kernel over all of a group's tensors) where every tensor is on the CPU or a
CUDA device. This script shows why: it times ``optimizer.step()`` alone on the parameters of
``ppvae.build("vae", 784, {"stochastic_layers": 1})`` (784-200-200-50, both networks: 0.43M
parameters in 12 tensors) with fixed random gradients, for

    default   torch.optim.Adam(params)              (on the CPU: the per-tensor for-loop)
    foreach   torch.optim.Adam(params, foreach=True)
    fused     torch.optim.Adam(params, fused=True)  (what ppvae's trainer uses)

in interleaved blocks, many rounds, rotating order (a shared machine's load changes from second
to second), and prints the median ms per step and the median per-round ratio to ``default``, on
this process's CPU clock (one torch thread) and on the wall clock. It also checks that the three
give the same parameters after the timed steps, up to rounding. Nothing here asserts a time.

    python benchmarks/adam.py             # ~20 s
    python benchmarks/adam.py --quick     # a second, for the tests
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import ppvae

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import BETAS, EPS, LR, load_average, machine, paired_ratio  # noqa: E402

KINDS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=40, help="steps per timed block")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--quick", action="store_true", help="3 rounds of 5 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 3, 5
    torch.set_num_threads(args.threads)
    model, guide, _ = ppvae.build("vae", 784, {"stochastic_layers": 1}, seed=0)
    start = [t.detach().clone() for t in (*model.parameters(), *guide.parameters())]
    torch.manual_seed(0)
    grads = [torch.randn_like(t) * 1e-2 for t in start]
    params = {k: [t.clone().requires_grad_() for t in start] for k in KINDS}
    for k, ps in params.items():
        for q, g in zip(ps, grads):
            q.grad = g.clone()
    opts = {k: torch.optim.Adam(params[k], lr=LR, betas=BETAS, eps=EPS, **kw) for k, kw in KINDS.items()}
    print("ppvae Adam-step benchmark: the parameters of ppvae.build('vae', 784, {'stochastic_layers': 1}), "
          f"{sum(t.numel() for t in start)} in {len(start)} tensors")
    print(f"date {datetime.date.today()}, device cpu")
    print(f"machine: {machine(torch.device('cpu'))}")
    print(f"{load_average()} at start; command: {shlex.join(['python', *sys.argv])}")
    for opt in opts.values():  # warm-up: state allocation, first-call costs
        for _ in range(3):
            opt.step()
    times: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in KINDS}
    names = list(KINDS)
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(args.steps):
                opts[k].step()
            times[k]["cpu"].append((time.process_time() - c0) / args.steps * 1e3)
            times[k]["wall"].append((time.perf_counter() - w0) / args.steps * 1e3)
    print()
    print(f"{'Adam':<9} {'clock':<5} {'ms/step':>8} {'ratio to default':>22}")
    for k in names:
        for clock in ("cpu", "wall"):
            q = paired_ratio(times[k][clock], times["default"][clock])
            print(f"{k if clock == 'cpu' else '':<9} {clock:<5} {statistics.median(times[k][clock]):>8.3f} "
                  f"{f'{q[0]:.3f} [{q[1]:.2f}-{q[2]:.2f}]':>22}")
    steps = 3 + args.rounds * args.steps
    worst = max(float((a.detach() - b.detach()).abs().max()) for k in ("foreach", "fused") for a, b in zip(params[k], params["default"]))
    print(f"\nafter {steps} steps each, the largest difference from default's parameters: {worst:.1e}")
    print(f"{load_average()} at end")


if __name__ == "__main__":
    main()
