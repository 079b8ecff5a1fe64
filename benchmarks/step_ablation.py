"""Where a training step's overhead goes: the same ELBO step written four ways, in one process.

    python benchmarks/step_ablation.py                 # 1 thread, CPU time, 12 rounds

On the IWAE paper's one-layer VAE (``ppvae.build("vae", 784)``), batch 100, Adam, the Monte Carlo
ELBO with one sample, each a full step (loss, backward, Adam):

    torch          closed-form log-densities on the pair's own modules (the hand-written step)
    distributions  the same modules with Pyro distribution objects (Normal(...).to_event(1),
                   BernoulliLogits) and their log_prob, but no pyro.sample, plate or trace
    ppvae traced   ppvae's objective through Pyro's traces (``use_direct_path(False)``)
    ppvae          ppvae's objective as ``ppvae.fit`` runs it (the direct path for story modules)

The gap torch -> distributions is the generic distribution arithmetic; distributions -> ppvae
traced is Pyro's per-site machinery and ppvae's reductions, which the direct path removes.
Blocks of steps run interleaved in a rotating order; printed: the median ms/step (CPU time of this
process) and the median over rounds of the per-round ratio to torch. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

import ppvae
from ppvae.direct import use_direct_path
from ppvae.distributions import BernoulliLogits
from ppvae.objectives import get_objective

N = 60_000  # the dataset size the loss is scaled to (N / B)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=60, help="steps per block")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 rounds of 3 steps, to check the script runs")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 3
    torch.set_num_threads(args.threads)
    model, guide, _ = ppvae.build("vae", 784, seed=0)
    opt = torch.optim.Adam(list(model.parameters()) + list(guide.parameters()), lr=1e-3)
    x = torch.bernoulli(torch.rand(100, 784, generator=torch.Generator().manual_seed(0)))
    layer, objective = guide.layers[0], get_objective("elbo", 1)

    def hand_written():
        loc, scale = layer(x)
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_px = -F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum(-1)
        log_w = log_px - 0.5 * z.pow(2).sum(-1) + 0.5 * eps.pow(2).sum(-1) + scale.log().sum(-1)
        return -(N / 100) * log_w.sum()

    def distributions():
        loc, scale = layer(x)
        q = dist.Normal(loc, scale).to_event(1)
        z = q.rsample()
        prior = dist.Normal(model.prior_loc, model.prior_scale).to_event(1)
        log_w = BernoulliLogits(model.decoder(z), validate_args=False).log_prob(x) + prior.log_prob(z) - q.log_prob(z)
        return -(N / 100) * log_w.sum()

    def traced():
        with use_direct_path(False):
            return objective.loss(model, guide, x, num_data=N)

    def direct():
        return objective.loss(model, guide, x, num_data=N)

    losses = {"torch": hand_written, "distributions": distributions, "ppvae traced": traced, "ppvae": direct}

    def stepper(loss_fn):
        def step():
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    fns = {k: stepper(f) for k, f in losses.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    with pyro.validation_enabled(False):  # as ppvae.fit trains
        values = []
        for f in losses.values():  # the four compute the same loss on the same random numbers
            torch.manual_seed(0)
            values.append(float(f().detach()))
        spread = (max(values) - min(values)) / abs(values[0])
        if spread > 1e-5:
            raise SystemExit(f"the four steps disagree on the same random numbers: {values}")
        print(f"losses equal on the same random numbers (rel. diff {spread:.1e})")
        for f in fns.values():
            for _ in range(2 if args.quick else 20):
                f()
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                t0 = time.process_time()
                for _ in range(args.steps):
                    fns[name]()
                times[name].append((time.process_time() - t0) / args.steps * 1e3)
    print(f"{'':<15}{'ms/step (CPU)':>14}{'ratio to torch':>16}")
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(times[name], times["torch"]))
        print(f"{name:<15}{statistics.median(times[name]):>14.3f}{ratio:>16.3f}")
    print("load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
