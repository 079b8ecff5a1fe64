"""Per-datapoint log-weights of a model/guide pair, from one guide trace and one replayed model trace.

Every ppvae objective and the marginal-likelihood evaluator read a pair through this file. The guide
is traced under an outer particle plate (K samples per datapoint, vectorized), the model is replayed
against it, and each sample site's *unscaled* ``fn.log_prob(value)`` is reduced to shape ``(K, B)``:
one number per particle and datapoint. Reading unscaled log-probs is what makes the
importance-weighted bound correct under minibatch scaling (DESIGN fact 2): the scale is applied
once, after the logsumexp over particles, never inside it.

The contract the pair must follow (checked here, with an error that says how to fix it):
local latents and the observed ``"x"`` sit inside ``pyro.plate("data", ...)``; event dimensions are
declared with ``.to_event``; every latent the model samples is also sampled by the guide.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions import Unit
from pyro.poutine.util import site_is_subsample

from ppvae.errors import ConfigError

DATA_PLATE = "data"
PARTICLE_PLATE = "_ppvae_particles"


@dataclass
class Site:
    """One sample site's contribution, reduced to ``(K, B)`` (particles x datapoints)."""

    name: str
    log_prob: torch.Tensor  # (K, B) unscaled log-density of the value
    fn: Any
    value: torch.Tensor
    is_observed: bool
    is_factor: bool


@dataclass
class PairTrace:
    """The reduced traces of one guide run and the model replayed against it."""

    model_sites: dict[str, Site]
    guide_sites: dict[str, Site]
    scale: float  # data-plate scale times num_data / plate size: multiplies the per-datapoint sum
    data_factor: float  # num_data / plate size alone (what a Pyro ELBO still needs applied)
    particle_dim: int
    data_dim: int
    batch_size: int
    guide_order: list[str] = field(default_factory=list)
    model_order: list[str] = field(default_factory=list)

    @property
    def reparameterized(self) -> bool:
        """True when every guide site can be sampled with rsample (pathwise gradients)."""
        return all(s.fn.has_rsample for s in self.guide_sites.values())

    def log_likelihood_terms(self) -> torch.Tensor:
        """Sum of observed, non-factor model sites: log p(x | z), shape (K, B)."""
        return _sum(s.log_prob for s in self.model_sites.values() if s.is_observed and not s.is_factor)

    def log_prior_terms(self) -> torch.Tensor:
        """Latent model sites and ``pyro.factor`` sites: log p(z) (+ factors), shape (K, B)."""
        return _sum(s.log_prob for s in self.model_sites.values() if not s.is_observed or s.is_factor)

    def log_guide_terms(self) -> torch.Tensor:
        """log q(z | x), shape (K, B)."""
        return _sum(s.log_prob for s in self.guide_sites.values())

    def log_weights(self, beta: float = 1.0) -> torch.Tensor:
        """log p(x, z) - log q(z | x) per particle and datapoint, shape (K, B); ``beta`` tempers
        the prior/guide part (KL warm-up) and leaves the likelihood alone."""
        latent = self.log_prior_terms() - self.log_guide_terms()
        return self.log_likelihood_terms() + (latent if beta == 1.0 else beta * latent)


def _sum(terms) -> torch.Tensor:
    total = None
    for t in terms:
        total = t if total is None else total + t
    if total is None:
        raise ConfigError("the model/guide pair has no sample sites to score")
    return total


# Where the particle plate goes depends on how deeply the pair nests its own plates. It is found
# once per (model, guide) with an extra trace and cached; JIT-style caching on object identity, so
# pass stable callables (not fresh bound methods) to keep the cache hot.
_NESTING: "weakref.WeakKeyDictionary[Any, dict[int, int]]" = weakref.WeakKeyDictionary()


def _max_plate_nesting(model: Callable, guide: Callable, x: torch.Tensor, args, kwargs) -> int:
    try:
        cached = _NESTING.get(model, {}).get(id(guide))
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is not None:
        return cached
    # fork_rng: this extra trace must not consume the caller's random numbers (a run's samples
    # would otherwise depend on whether the cache was warm).
    devices = [x.device.index or 0] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), poutine.block():
        try:
            guide_tr = poutine.trace(guide).get_trace(x, *args, **kwargs)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, *args, **kwargs)
        except ValueError as e:
            raise_if_shape_error(e)
            raise
    _check_structure(model_tr, guide_tr)
    nesting = 0
    for tr in (guide_tr, model_tr):
        for site in _sample_sites(tr).values():
            for frame in site["cond_indep_stack"]:
                if frame.vectorized:
                    nesting = max(nesting, -frame.dim)
    try:
        _NESTING.setdefault(model, {})[id(guide)] = nesting
    except TypeError:
        pass
    return nesting


def _sample_sites(tr):
    return {n: s for n, s in tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}


def _check_structure(model_tr, guide_tr) -> None:
    """Errors for pairs that would silently give wrong log-weights."""
    guide_latents = {n for n, s in _sample_sites(guide_tr).items() if not s["is_observed"]}
    model_latents = {n for n, s in _sample_sites(model_tr).items() if not s["is_observed"]}
    missing = model_latents - guide_latents
    if missing:
        raise ConfigError(
            f"the model samples {sorted(missing)} but the guide does not: every latent site of the "
            "model needs a guide site of the same name (otherwise it would be drawn from the prior "
            "and the importance weights would be wrong)"
        )
    extra = guide_latents - model_latents
    if extra:
        raise ConfigError(f"the guide samples {sorted(extra)}, which the model does not have: rename or remove them")
    for tr, who in ((model_tr, "model"), (guide_tr, "guide")):
        for name, site in _sample_sites(tr).items():
            if not any(f.name == DATA_PLATE for f in site["cond_indep_stack"]):
                raise ConfigError(
                    f"{who} site {name!r} is outside pyro.plate({DATA_PLATE!r}, ...): ppvae scores "
                    "each datapoint separately, so local latents and the observation must sit inside "
                    f"the {DATA_PLATE!r} plate (global latents, e.g. Bayesian weights, need an "
                    "objective that handles them)"
                )


def trace_pair(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *args,
    num_particles: int = 1,
    num_data: int | None = None,
    **kwargs,
) -> PairTrace:
    """Run ``guide(x, *args, **kwargs)`` under a particle plate of size ``num_particles``, replay
    ``model`` against it, and reduce every sample site to ``(num_particles, B)``.

    ``num_data`` is the size of the dataset the minibatch ``x`` comes from: the returned ``scale``
    turns a sum over the minibatch into an estimate of the sum over the dataset (N / B), counting any
    scale the pair applies itself (a ``subsample``d data plate of size N already carries N / B).
    """
    nesting = _max_plate_nesting(model, guide, x, args, kwargs)
    particle_dim = -(nesting + 1)
    try:
        if num_particles > 1:
            plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim)
            with plate:
                guide_tr = poutine.trace(guide).get_trace(x, *args, **kwargs)
            with plate:
                model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, *args, **kwargs)
        else:  # no plate: saves a messenger on the hot path; the particle dim is then implicit (size 1)
            guide_tr = poutine.trace(guide).get_trace(x, *args, **kwargs)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, *args, **kwargs)
    except ValueError as e:
        raise_if_shape_error(e)
        raise

    batch = None
    scale = data_factor = None
    data_dim = -1
    sites: list[dict[str, Site]] = [{}, {}]
    orders: list[list[str]] = [[], []]
    for i, tr in enumerate((model_tr, guide_tr)):
        for name, node in tr.nodes.items():
            if node["type"] != "sample" or (i == 1 and node["is_observed"]) or site_is_subsample(node):
                continue
            frame = next((f for f in node["cond_indep_stack"] if f.name == DATA_PLATE), None)
            if frame is None:
                _check_structure(model_tr, guide_tr)  # raises with the explanation
            if batch is None:
                batch = frame.size  # the (sub)sample size; full_size is the plate's declared size
                data_dim = frame.dim
                full = frame.full_size if frame.full_size is not None else frame.size
                data_factor = num_data / full if num_data is not None else 1.0
                scale = float(node["scale"]) * data_factor
            lp = reduce_to_particles_by_data(node["fn"].log_prob(node["value"]), name, frame.dim, particle_dim, batch)
            if lp.shape[0] not in (1, num_particles):
                # a batch dim sits where the particles go: e.g. Normal(loc, scale) over a (B, D)
                # loc without .to_event(1) when D == B, which the plate's shape check lets through
                raise ConfigError(
                    f"site {name!r}: log_prob has batch shape {tuple(node['fn'].batch_shape)}, one "
                    f"dimension more than the plates around it; did you forget .to_event(...) on its "
                    "distribution?"
                )
            sites[i][name] = Site(
                name, lp, node["fn"], node["value"], node["is_observed"], isinstance(node["fn"], Unit)
            )
            orders[i].append(name)
    return PairTrace(sites[0], sites[1], scale, data_factor, particle_dim, data_dim, batch, orders[1], orders[0])


def raise_if_shape_error(e: ValueError) -> None:
    """Re-raise Pyro's plate shape error as a ConfigError that says the usual cause: a
    vector-valued site without ``.to_event``. Other errors are left to the caller."""
    if isinstance(e, ConfigError) or "Shape mismatch inside plate" not in str(e):
        return
    raise ConfigError(
        f"{str(e).splitlines()[0]}: a distribution has more batch dimensions than the plates around "
        "it; declare the event dimensions of vector-valued sites with .to_event(...), e.g. "
        "dist.Bernoulli(logits=...).to_event(1) for the observed 'x'"
    ) from e


def reduce_to_particles_by_data(lp: torch.Tensor, name: str, data_dim: int, particle_dim: int, batch: int) -> torch.Tensor:
    """Sum a site's log-prob over every batch dim but the particle and data dims -> (K, B)."""
    ndim = -particle_dim
    if lp.dim() > ndim:
        raise ConfigError(
            f"site {name!r}: log_prob has batch shape {tuple(lp.shape)}, more dimensions than the "
            f"pair's plates ({ndim - 1}) allow; declare the event dimensions with .to_event(...)"
        )
    if lp.dim() < ndim:
        lp = lp.reshape((1,) * (ndim - lp.dim()) + lp.shape)
    if lp.shape[data_dim] not in (1, batch):
        raise ConfigError(
            f"site {name!r}: log_prob has batch shape {tuple(lp.shape)} but the {DATA_PLATE!r} plate "
            f"has size {batch} at dim {data_dim}; did you forget .to_event(...) on its distribution?"
        )
    if ndim > 2:
        keep = (0, ndim + data_dim)
        other = [d for d in range(ndim) if d not in keep]
        lp = lp.sum(other)
    if lp.shape[-1] != batch:
        lp = lp.expand(lp.shape[0], batch)
    return lp
