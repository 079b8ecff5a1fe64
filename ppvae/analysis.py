"""Analysis of a trained pair: reconstructions, samples, posterior means, active units and the
aggregate posterior.

All of these read a pair through Pyro traces, so they work for any model/guide that follows the
convention, not only ppvae's families.
"""

from __future__ import annotations

from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from ppvae.distributions import DiagonalNormalMixture
from ppvae.errors import ConfigError
from ppvae.nn import evaluates
from ppvae.traces import local_sample_sites

OBS = "x"


@torch.no_grad()
@evaluates
def reconstruct(model: Callable, guide: Callable, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Mean of p(x | z) at one z ~ q(z | x): the pair's reconstruction of each row, shape (N, D)."""
    guide_tr = poutine.trace(guide).get_trace(x, *args, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, *args, **kwargs)
    return model_tr.nodes[OBS]["fn"].mean


@torch.no_grad()
@evaluates
def sample(model: Callable, num_samples: int, x_dim: int, *args, mean: bool = True, device="cpu", **kwargs) -> torch.Tensor:
    """Draws from the model's prior predictive, shape (num_samples, x_dim).

    The observed site is un-conditioned (``poutine.uncondition``), so any model written as
    ``model(x)`` can generate: ``x`` only fixes the batch size. ``mean=True`` returns the mean of
    p(x | z) (pixel probabilities: smoother pictures) instead of a draw from it.
    """
    dummy = torch.zeros(num_samples, x_dim, device=device)
    program = poutine.uncondition(model)
    # A prior that is not a sample site alone (e.g. N(0, I) corrected by a pyro.factor, as in the
    # implicit-optimal-prior VAE) cannot be drawn by running the model: such a model provides
    # sample_latents(n) -> {site: value}, and the program is conditioned on those draws.
    draw = getattr(model, "sample_latents", None)
    if callable(draw):
        latents = draw(num_samples)
        program = poutine.condition(program, data=latents if isinstance(latents, dict) else {"z": latents})
    tr = poutine.trace(program).get_trace(dummy, *args, **kwargs)
    site = tr.nodes[OBS]
    return site["fn"].mean if mean else site["value"]


@torch.no_grad()
@evaluates
def posterior_means(guide: Callable, x: torch.Tensor, *args, num_particles: int = 100, **kwargs) -> dict[str, torch.Tensor]:
    """E_q[z | x] for every per-datapoint latent site of the guide, shape (N, d) each.

    Global sites (a Bayesian decoder's weights, outside the data plate) are left out: their mean
    does not vary with x, so active units and latent plots have nothing to say about them.

    Uses each site's distribution mean, averaged over ``num_particles`` draws of the sites before
    it (exact for the first layer; for deeper layers a Monte Carlo average of exact conditional
    means, whose noise is far below the active-unit threshold).
    """
    with pyro.plate("_ppvae_particles", num_particles, dim=-2):
        tr = poutine.trace(guide).get_trace(x, *args, **kwargs)
    out = {}
    for name, site in local_sample_sites(tr).items():
        m = site["fn"].mean
        m = m.expand(site["value"].shape)
        out[name] = m.mean(0) if m.dim() == 3 else m
    return out


@torch.no_grad()
@evaluates
def active_units(guide: Callable, x: torch.Tensor, *args, threshold: float = 1e-2, batch_size: int = 500, **kwargs) -> dict[str, dict]:
    """Burda et al.'s active units: latent dimension u is active if Cov_x(E_q[u | x]) > threshold.

    Returns, per latent site, ``{"active": int, "total": int, "variances": list[float]}``.
    """
    means: dict[str, list[torch.Tensor]] = {}
    for start in range(0, x.shape[0], batch_size):
        for name, m in posterior_means(guide, x[start : start + batch_size], *args, **kwargs).items():
            means.setdefault(name, []).append(m)
    report = {}
    for name, ms in means.items():
        var = torch.cat(ms, 0).var(0, unbiased=False)
        report[name] = {"active": int((var > threshold).sum()), "total": int(var.numel()), "variances": var.tolist()}
    return report


@torch.no_grad()
@evaluates
def aggregate_posterior(guide: Callable, x: torch.Tensor, *args, site: str = "z", **kwargs) -> DiagonalNormalMixture:
    """The aggregate posterior q(z) = (1/N) sum_i q(z | x_i) of a diagonal-Gaussian guide site over
    the rows of ``x``, as one mixture distribution (read from a trace of the guide on ``x``)."""
    fn = poutine.trace(guide).get_trace(x, *args, **kwargs).nodes[site]["fn"]
    while isinstance(fn, (dist.Independent, torch.distributions.Independent)):
        fn = fn.base_dist
    if not isinstance(fn, torch.distributions.Normal):
        raise ConfigError(f"aggregate_posterior needs a diagonal Normal at guide site {site!r}, got {type(fn).__name__}")
    loc, scale = torch.broadcast_tensors(fn.loc, fn.scale)
    return DiagonalNormalMixture(loc.reshape(x.shape[0], -1), scale.reshape(x.shape[0], -1))
