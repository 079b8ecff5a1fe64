"""How well can the log normalizer of an implicit optimal prior be estimated?

The IOP's prior N(0, I) exp T(z) is normalized only if T is the exact log ratio log q(z)/N(z; 0, I);
its log-likelihoods are exact only after subtracting log Z = log E_N(0,I)[exp T(z)]. This script
estimates log Z of a trained IOP run with several importance-sampling proposals and prints each
estimate with the PSIS Pareto-k and effective sample size of its weights (k > 0.7: unreliable)::

    python -m ppvae.experiments.iop_log_z RUN_DIR [--samples 100000] [--points 2000] [--data-root DIR]
    python -m ppvae.experiments.iop_log_z RUN_DIR --method both [--temperatures 1000] [--chains 100] [--repeats 5]

Proposals: N(0, I) itself; the defensive mixture 1/2 N(0, I) + 1/2 the aggregate posterior of the
first ``--points`` validation points, with the components' scales widened by 1, 1.5, 2, 3 and 5;
and the same with a single Gaussian matched to the aggregate posterior's moments (x1, x1.5, x2).
All are unbiased for Z; they differ in how heavy-tailed their weights are.

``--method ais`` (or ``both``: the proposals, then AIS) adds annealed importance sampling from
N(0, I) to N(0, I) exp T(z) (:mod:`ppvae.ais`): its estimate over all chains, the standard error
over ``--repeats`` independent repeats, each repeat's estimate, the Pareto-k and ESS of the chains'
weights, the HMC acceptance rates, and its wall and CPU time; ``--save`` also writes them, with
the settings, to ``RUN/log_z_ais.json`` (read by ``ppvae.experiments.prior_comparison_csv``).
"""

from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path

import torch

from ppvae.ais import SCHEDULES, AISResult, ais_log_normalizer
from ppvae.analysis import aggregate_posterior
from ppvae.distributions import DiagonalNormalMixture
from ppvae.errors import ConfigError
from ppvae.reproduce.common import write_json_atomic
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


AIS_FILE = "log_z_ais.json"  # in the run folder, with --save


def ais_record(r: AISResult, settings: dict, seed: int) -> dict:
    """What ``--save`` writes: the estimate, its spread over repeats, diagnostics, cost, settings."""
    finite = lambda v: v if math.isfinite(v) else None  # noqa: E731  (one repeat: no spread; JSON has no NaN)
    return {"log_z": r.log_z, "se": finite(r.se), "log_z_repeats": r.log_z_repeats.tolist(), "repeat_std": finite(r.repeat_std),
            "pareto_k": r.pareto_k, "ess": r.ess, "acceptance_mean": float(r.acceptance.mean()) if r.acceptance.numel() else None,
            "acceptance_min": float(r.acceptance.min()) if r.acceptance.numel() else None,
            "wall_seconds": r.wall_seconds, "cpu_seconds": r.cpu_seconds, "torch_threads": torch.get_num_threads(),
            "settings": settings, "seed": seed}


def print_ais(result: AISResult, settings: dict) -> None:
    r = result
    print(f"annealed importance sampling: {settings['temperatures']} temperatures ({settings['schedule_kind']}), "
          f"{settings['transitions']} HMC move(s) of {settings['leapfrog_steps']} leapfrog steps each, "
          f"{settings['repeats']} repeats x {settings['chains']} chains, step sizes from a "
          f"{settings['pilot_chains']}-chain pilot")
    print(f"  log Z {r.log_z:.3f} +- {r.se:.3f} (all chains; +- the standard error over repeats), "
          f"Pareto-k {r.pareto_k:.2f}, ESS {r.ess:.1f} of {r.log_weights.numel()}")
    print("  repeats: " + " ".join(f"{v:.3f}" for v in r.log_z_repeats.tolist()) + f" (std {r.repeat_std:.3f})")
    if r.acceptance.numel():
        print(f"  HMC acceptance mean {float(r.acceptance.mean()):.2f} (min {float(r.acceptance.min()):.2f}), "
              f"step size {float(r.step_sizes.min()):.3g} to {float(r.step_sizes.max()):.3g}")
    print(f"  {r.wall_seconds:.1f} s wall, {r.cpu_seconds:.1f} s CPU (pilot included)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="an IOP run folder (e.g. OUT/frey-face/iop of ppvae reproduce iop-comparison)")
    p.add_argument("--method", choices=("is", "ais", "both"), default="is",
                   help="is: the importance-sampling proposals; ais: annealed importance sampling; both")
    p.add_argument("--samples", type=int, default=100_000, help="importance samples per estimate")
    p.add_argument("--points", type=int, default=2000, help="validation points in the aggregate posterior")
    p.add_argument("--data-root", default=None, help="where the run's dataset lives (default: the run's own)")
    p.add_argument("--seed", type=int, default=0)
    ais = p.add_argument_group("annealed importance sampling (defaults: those of ppvae.ais.ais_log_normalizer)")
    default = {k: v.default for k, v in inspect.signature(ais_log_normalizer).parameters.items()}
    ais.add_argument("--temperatures", type=int, default=default["temperatures"])
    ais.add_argument("--chains", type=int, default=default["chains"], help="chains per repeat")
    ais.add_argument("--repeats", type=int, default=default["repeats"], help="independent repeats (for the standard error)")
    ais.add_argument("--transitions", type=int, default=default["transitions"], help="HMC moves per temperature")
    ais.add_argument("--leapfrog-steps", type=int, default=default["leapfrog_steps"])
    ais.add_argument("--step-size", type=float, default=default["step_size"], help="the pilot's first HMC step size")
    ais.add_argument("--schedule", choices=SCHEDULES, default=default["schedule_kind"])
    ais.add_argument("--pilot-chains", type=int, default=default["pilot_chains"], help="chains of the step-size pilot")
    ais.add_argument("--save", action="store_true", help=f"also write the AIS result to RUN/{AIS_FILE}")
    args = p.parse_args(argv)
    model, guide, ckpt = load_pair(args.run)
    if not hasattr(model, "log_normalizer"):
        raise ConfigError(f"{args.run} is a {ckpt['meta'].get('family')!r} run; this script needs an 'iop' run")
    if args.method in ("is", "both"):
        print_proposals(args, model, guide, ckpt)
    if args.method in ("ais", "both"):
        settings = dict(temperatures=args.temperatures, chains=args.chains, repeats=args.repeats,
                        transitions=args.transitions, leapfrog_steps=args.leapfrog_steps,
                        step_size=args.step_size, schedule_kind=args.schedule, pilot_chains=args.pilot_chains)
        torch.manual_seed(args.seed)
        result = model.log_normalizer_ais(**settings)
        print_ais(result, settings)
        if args.save:
            write_json_atomic(ais_record(result, settings, args.seed), Path(args.run) / AIS_FILE)
    return 0


def print_proposals(args: argparse.Namespace, model, guide, ckpt: dict) -> None:
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


if __name__ == "__main__":
    raise SystemExit(main())
