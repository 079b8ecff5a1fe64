"""Training objectives, selectable by name: ``elbo``, ``elbo-analytic`` and ``iwae``.

Each objective is a small callable object. ``loss(model, guide, x, num_data=N)`` returns the
differentiable *negative* bound for a minibatch, scaled to the whole dataset (N / B times the sum of
the per-datapoint bounds); ``bound(model, guide, x)`` returns the per-datapoint bound, shape (B,).

``elbo`` and ``elbo-analytic`` compute exactly what Pyro's ``Trace_ELBO`` and
``TraceMeanField_ELBO`` compute for reparameterized pairs (the tests check equality on the same
random numbers) from one lean trace per step, without the per-step bookkeeping that makes a naive
Pyro loop 1.3-1.7x slower than plain PyTorch on small networks (DESIGN fact 4). Pairs with
non-reparameterizable sites (discrete latents) fall back to Pyro's own ELBO classes.

References:
  Kingma & Welling (2014), Auto-Encoding Variational Bayes: estimators A (Monte Carlo KL) and B
  (analytic KL). Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import abc
import difflib
import math
from typing import Callable

import pyro
import torch
from pyro import poutine
from torch.distributions import kl_divergence
from torch.distributions.kl import _KL_REGISTRY

from ppvae.errors import ConfigError
from ppvae.traces import PairTrace, reduce_to_particles_by_data, trace_pair


class Objective(abc.ABC):
    """Base class: a bound on log p(x) estimated with ``num_particles`` samples per datapoint.
    A new objective overrides one hook, :meth:`per_datapoint`."""

    name = ""

    def __init__(self, num_particles: int = 1):
        if int(num_particles) < 1:
            raise ConfigError(f"num_particles must be a positive integer, got {num_particles!r}")
        self.num_particles = int(num_particles)

    @abc.abstractmethod
    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        """The bound of each datapoint of the traced minibatch, shape (B,)."""

    def bound(self, model: Callable, guide: Callable, x: torch.Tensor, *args, beta: float = 1.0, **kwargs) -> torch.Tensor:
        """The per-datapoint bound, shape (B,)."""
        tr = trace_pair(model, guide, x, *args, num_particles=self.num_particles, **kwargs)
        return self.per_datapoint(tr, beta)

    def loss(
        self,
        model: Callable,
        guide: Callable,
        x: torch.Tensor,
        *args,
        num_data: int | None = None,
        beta: float = 1.0,
        **kwargs,
    ) -> torch.Tensor:
        """Differentiable loss: minus the bound summed over the minibatch and scaled by N / B."""
        key = (id(model), id(guide))
        if key in _NEEDS_PYRO:
            return self._pyro_fallback(model, guide, x, args, kwargs, _NEEDS_PYRO[key], beta)
        tr = trace_pair(model, guide, x, *args, num_particles=self.num_particles, num_data=num_data, **kwargs)
        if not tr.reparameterized:  # discrete latents: remember, and let Pyro's estimator handle it
            _NEEDS_PYRO[key] = tr.data_factor
            return self._pyro_fallback(model, guide, x, args, kwargs, tr.data_factor, beta)
        return -tr.scale * self.per_datapoint(tr, beta).sum()

    def _pyro_fallback(self, model, guide, x, args, kwargs, data_factor, beta):
        raise ConfigError(
            f"objective {self.name!r} needs reparameterizable latents (rsample); use 'elbo', which "
            "falls back to Pyro's Trace_ELBO score-function estimator for discrete latents"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_particles={self.num_particles})"


class ELBO(Objective):
    """Monte Carlo ELBO (estimator A): mean over L particles of log p(x, z) - log q(z | x).
    Equal to ``pyro.infer.Trace_ELBO(num_particles=L, vectorize_particles=True)``."""

    name = "elbo"

    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        return tr.log_weights(beta).mean(0)

    def _pyro_fallback(self, model, guide, x, args, kwargs, data_factor, beta):
        if beta != 1.0:
            raise ConfigError("KL warm-up needs reparameterizable latents; set kl_warmup_epochs=0")
        elbo = pyro.infer.Trace_ELBO(num_particles=self.num_particles, vectorize_particles=self.num_particles > 1)
        return elbo.differentiable_loss(
            poutine.scale(model, data_factor), poutine.scale(guide, data_factor), x, *args, **kwargs
        )


class AnalyticELBO(Objective):
    """ELBO with the analytic KL where it is valid (estimator B), Monte Carlo elsewhere.
    Equal to ``pyro.infer.TraceMeanField_ELBO`` on mean-field pairs.

    The analytic KL(q(z_s | .) || p(z_s | .)) replaces log q - log p of site s only when every
    latent the model's p(z_s | .) can depend on (the model sites before s) is sampled by the guide
    before s; otherwise (e.g. z1 of a two-layer VAE, whose prior depends on z2, sampled after z1 by
    the guide) the Monte Carlo term is kept, which stays unbiased.
    """

    name = "elbo-analytic"

    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        latent = None
        for name, q in tr.guide_sites.items():
            p = tr.model_sites[name]
            kl = _analytic_kl(q.fn, p.fn) if _kl_is_valid(tr, name) else None
            term = q.log_prob - p.log_prob if kl is None else _kl_to_kb(kl, tr)
            latent = term if latent is None else latent + term
        factors = [s.log_prob for s in tr.model_sites.values() if s.is_factor]
        for f in factors:  # pyro.factor sites (e.g. a learned prior correction) stay Monte Carlo
            latent = -f if latent is None else latent - f
        lik = tr.log_likelihood_terms()
        if latent is None:
            return lik.mean(0)
        return (lik - (latent if beta == 1.0 else beta * latent)).mean(0)


class IWAE(Objective):
    """Importance-weighted bound with k particles: log (1/k) sum_k w_k per datapoint, then scaled.

    Unlike ``pyro.infer.RenyiELBO(alpha=0)``, which computes logmeanexp(scale * log w) under
    minibatch scaling (a tempered bound, pyro issue 2220), this applies the scale after the
    logsumexp, so the loss is N / B times the sum of per-datapoint IWAE bounds.
    """

    name = "iwae"

    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        log_w = tr.log_weights(beta)  # (k, B)
        return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (ELBO, AnalyticELBO, IWAE)}


def get_objective(name: str | Objective, num_particles: int = 1) -> Objective:
    """An objective by name (``elbo``, ``elbo-analytic``, ``iwae``), or the object passed in."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        close = difflib.get_close_matches(str(name), OBJECTIVES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}.{hint}")
    return OBJECTIVES[name](num_particles)


# --- helpers ---------------------------------------------------------------------------------

# Pairs found to have non-reparameterizable guide sites, keyed on identity, with their N / B factor.
_NEEDS_PYRO: dict[tuple[int, int], float] = {}


def _kl_is_valid(tr: PairTrace, name: str) -> bool:
    m_before = tr.model_order[: tr.model_order.index(name)]
    g_before = set(tr.guide_order[: tr.guide_order.index(name)])
    return all(n in g_before for n in m_before if not tr.model_sites[n].is_observed)


def _analytic_kl(q, p):
    # Look up without calling: kl_divergence raises NotImplementedError for unregistered pairs,
    # and exceptions on the hot path are slow.
    if not _has_kl(type(q), type(p)):
        return None
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


_HAS_KL: dict[tuple[type, type], bool] = {}


def _has_kl(tq: type, tp: type) -> bool:
    key = (tq, tp)
    if key not in _HAS_KL:
        _HAS_KL[key] = any(issubclass(tq, a) and issubclass(tp, b) for a, b in _KL_REGISTRY)
    return _HAS_KL[key]


def _kl_to_kb(kl: torch.Tensor, tr: PairTrace) -> torch.Tensor:
    return reduce_to_particles_by_data(kl, "kl", tr.data_dim, tr.particle_dim, tr.batch_size)
