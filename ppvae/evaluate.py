"""The evaluation report of a trained pair: bounds, marginal likelihood, diagnostics.

``evaluate_pair`` gathers what a paper's table needs for one model: the test ELBO, the IWAE bound
at a given k, log p(x) by importance sampling (mean and standard error over datapoints), the share
of datapoints whose Pareto-k exceeds 0.7 (their estimate is unreliable), Burda et al.'s active
units, and the reconstruction error. When more than ``UNRELIABLE_SHARE`` (10%) of the datapoints
exceed 0.7, the report says so: ``"log_px_reliable": false`` plus a ``"warning"`` on what to do,
and the table marks log p(x) as UNRELIABLE.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from ppvae.analysis import active_units, reconstruct
from ppvae.likelihood import log_likelihood
from ppvae.nn import evaluates
from ppvae.objectives import get_objective

PARETO_K_THRESHOLD = 0.7  # Vehtari et al.: above it the importance-sampling estimate is unreliable
# log p(x) is flagged as unreliable when more than this share of datapoints exceed the threshold.
UNRELIABLE_SHARE = 0.10
# Weights this close to constant (ESS >= 99.9% of the samples, i.e. a coefficient of variation
# under ~3%) make an exact estimate; arviz's tail fit degenerates on them and can return k = inf
# (``likelihood.pareto_k`` catches only log-weight spreads < 1e-6, below float32 rounding of a
# log density), so their k is taken as 0 here, as ``pareto_k`` intends.
FLAT_ESS_RATIO = 0.999


def effective_pareto_k(pareto_k: torch.Tensor, ess: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Pareto-k with near-constant weights (``ess >= FLAT_ESS_RATIO * num_samples``) set to 0."""
    flat = ess.to(pareto_k.dtype) >= FLAT_ESS_RATIO * num_samples
    return torch.where(flat, torch.zeros_like(pareto_k), pareto_k)


def reliability_warning(share_above: float, max_k: float) -> str | None:
    """The warning attached to a log p(x) whose Pareto-k diagnostics fail: more than
    :data:`UNRELIABLE_SHARE` of the datapoints above :data:`PARETO_K_THRESHOLD`; else None."""
    if not share_above > UNRELIABLE_SHARE:
        return None
    return (
        f"log p(x) is UNRELIABLE: {100 * share_above:.1f}% of datapoints have Pareto-k > "
        f"{PARETO_K_THRESHOLD} (max {max_k:.2f}; more than {100 * UNRELIABLE_SHARE:.0f}% is "
        f"flagged), so the guide is a poor importance-sampling proposal and the estimate is "
        f"likely too low and noisy. Use more importance samples (--num-samples / num_samples), "
        f"a better guide or more training, or train with the IWAE objective (--objective iwae), "
        f"which fits the guide as a proposal."
    )


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    return float(v.mean()), float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")


@torch.no_grad()
@evaluates
def per_datapoint_bound(model: Callable, guide: Callable, x: torch.Tensor, objective: str, num_particles: int, batch_size: int = 500) -> torch.Tensor:
    """The ELBO or IWAE bound of every row of ``x``, shape (N,)."""
    obj = get_objective(objective, num_particles)
    b = max(1, min(batch_size, 50_000 // num_particles))
    return torch.cat([obj.bound(model, guide, x[i : i + b]) for i in range(0, x.shape[0], b)])


@evaluates
def evaluate_pair(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int = 5000,
    iwae_k: int = 50,
    diagnostics: bool = True,
) -> dict:
    """A JSON-ready report for the pair on ``x``; every figure is nats per datapoint."""
    t0 = time.perf_counter()
    report: dict = {"num_datapoints": int(x.shape[0]), "num_samples": int(num_samples), "iwae_k": int(iwae_k)}
    report["elbo"], report["elbo_se"] = mean_and_se(per_datapoint_bound(model, guide, x, "elbo-analytic", 1))
    report[f"iwae_{iwae_k}"], report[f"iwae_{iwae_k}_se"] = mean_and_se(per_datapoint_bound(model, guide, x, "iwae", iwae_k))
    res = log_likelihood(model, guide, x, num_samples=num_samples, diagnostics=diagnostics)
    log_px = res.log_px if diagnostics else res
    report["log_px"], report["log_px_se"] = mean_and_se(log_px)
    report["nll"] = -report["log_px"]
    if diagnostics:
        k_hat = effective_pareto_k(res.pareto_k, res.ess, num_samples)
        report["pareto_k_share_above_0.7"] = float((k_hat > PARETO_K_THRESHOLD).double().mean())
        report["pareto_k_max"] = float(k_hat.max())
        report["ess_mean"] = float(res.ess.mean())
        warning = reliability_warning(report["pareto_k_share_above_0.7"], report["pareto_k_max"])
        report["log_px_reliable"] = warning is None
        if warning is not None:
            report["warning"] = warning
    units = active_units(guide, x)
    report["active_units"] = {name: {"active": u["active"], "total": u["total"]} for name, u in units.items()}
    rec = reconstruct(model, guide, x)
    report["reconstruction_sse"] = float(((rec - x) ** 2).sum(-1).mean())  # squared error per datapoint
    report["eval_seconds"] = time.perf_counter() - t0
    return report


def format_report(report: dict) -> str:
    """A readable table of :func:`evaluate_pair`'s report."""
    k = report["iwae_k"]
    rows = [
        ("datapoints", f"{report['num_datapoints']}"),
        ("test ELBO", f"{report['elbo']:.3f} +- {report['elbo_se']:.3f}"),
        (f"IWAE bound (k={k})", f"{report[f'iwae_{k}']:.3f} +- {report[f'iwae_{k}_se']:.3f}"),
        (f"log p(x) (S={report['num_samples']})", f"{report['log_px']:.3f} +- {report['log_px_se']:.3f}"),
    ]
    unreliable = report.get("log_px_reliable") is False
    if unreliable:
        rows[-1] = (rows[-1][0], rows[-1][1] + "  UNRELIABLE (see the warning below)")
    if "pareto_k_share_above_0.7" in report:
        rows.append(("Pareto-k > 0.7", f"{100 * report['pareto_k_share_above_0.7']:.1f}% of datapoints (max {report['pareto_k_max']:.2f})"))
    for name, u in report["active_units"].items():
        rows.append((f"active units ({name})", f"{u['active']} / {u['total']}"))
    rows.append(("reconstruction SSE", f"{report['reconstruction_sse']:.3f} per datapoint"))
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"{a:<{width}}  {b}" for a, b in rows)
    if unreliable:
        warning = report.get("warning") or "log p(x) is UNRELIABLE (Pareto-k diagnostics)."
        table += f"\nWARNING: {warning}"
    return table
