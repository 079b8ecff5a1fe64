"""How well can the log normalizer of an implicit optimal prior be estimated?

The IOP's prior N(0, I) exp T(z) is normalized only if T is the exact log ratio log q(z)/N(z; 0, I);
its log-likelihoods are exact only after subtracting log Z = log E_N(0,I)[exp T(z)]. This script
estimates log Z of a trained IOP run with several importance-sampling proposals and prints each
estimate with the PSIS Pareto-k and effective sample size of its weights (k > 0.7: unreliable)::

    python -m ppvae.experiments.iop_log_z RUN_DIR [--samples 100000] [--points 2000] [--data-root DIR]

Proposals: N(0, I) itself; the defensive mixture 1/2 N(0, I) + 1/2 the aggregate posterior of the
first ``--points`` validation points, with the components' scales widened by 1, 1.5, 2, 3 and 5;
and the same with a single Gaussian matched to the aggregate posterior's moments (x1, x1.5, x2).
All are unbiased for Z; they differ in how heavy-tailed their weights are.
"""

from __future__ import annotations

import argparse

import torch

from ppvae.analysis import aggregate_posterior
from ppvae.distributions import DiagonalNormalMixture
from ppvae.errors import ConfigError
from ppvae.runs import load_data, load_pair


def proposals(q: DiagonalNormalMixture) -> dict[str, DiagonalNormalMixture | None]:
    """The named proposals built from an aggregate posterior ``q`` (None: N(0, I) alone)."""
    out: dict[str, DiagonalNormalMixture | None] = {"none: N(0, I) alone": None}
    for f in (1.0, 1.5, 2.0, 3.0, 5.0):
        out[f"aggregate posterior, scales x{f:g}"] = DiagonalNormalMixture(q.loc, q.scale * f)
    mean = q.loc.mean(0)
    sd = (q.loc.var(0) + q.scale.pow(2).mean(0)).sqrt()  # the mixture's per-dimension variance
    for f in (1.0, 1.5, 2.0):
        out[f"moment-matched Gaussian, scale x{f:g}"] = DiagonalNormalMixture(mean[None], sd[None] * f)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="an IOP run folder (e.g. OUT/frey-face/iop of ppvae reproduce iop-comparison)")
    p.add_argument("--samples", type=int, default=100_000, help="importance samples per estimate")
    p.add_argument("--points", type=int, default=2000, help="validation points in the aggregate posterior")
    p.add_argument("--data-root", default=None, help="where the run's dataset lives (default: the run's own)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model, guide, ckpt = load_pair(args.run)
    if not hasattr(model, "log_normalizer"):
        raise ConfigError(f"{args.run} is a {ckpt['meta'].get('family')!r} run; this script needs an 'iop' run")
    spec = dict(ckpt["meta"]["dataset"])
    if args.data_root:
        spec["root"] = args.data_root
    x = load_data(spec).split("valid")[: args.points]
    if x.shape[0] == 0:
        raise ConfigError("the run's dataset has no validation split to build the aggregate posterior from")
    q = aggregate_posterior(guide, x)
    print(f"{args.run}: log Z of N(0, I) exp T(z), {args.samples} samples per proposal, "
          f"aggregate posterior of {x.shape[0]} validation points")
    print(f"{'proposal (defensive: 1/2 N(0, I) + 1/2 this)':58s} {'log Z':>9s} {'Pareto-k':>9s} {'ESS':>9s}")
    for name, proposal in proposals(q).items():
        torch.manual_seed(args.seed)
        log_z, k_hat, ess = model.log_normalizer(args.samples, proposal=proposal, diagnostics=True)
        print(f"{name:58s} {log_z:9.3f} {k_hat:9.2f} {ess:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
