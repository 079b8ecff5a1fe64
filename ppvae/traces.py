"""Per-datapoint log-weights of a model/guide pair, from one guide trace and one replayed model trace.

Every ppvae objective and the marginal-likelihood evaluator read a pair through this file. The guide
is traced under an outer particle plate (K samples per datapoint, vectorized), the model is replayed
against it, and each sample site's ``fn.log_prob(value)`` is reduced to shape ``(K, B)``: one number
per particle and datapoint. The data plate's minibatch scale is *not* in these numbers: it is
applied once, after the logsumexp over particles, never inside it, which is what makes the
importance-weighted bound correct under minibatch scaling (DESIGN fact 2).

Pyro's handlers in a pair are honoured as Pyro's own ELBOs honour them:

- masks (``poutine.mask``, ``obs_mask``, ``Distribution.mask``): a masked term contributes 0. A
  site's ``mask`` field is applied here; masks inside ``fn`` (``MaskedDistribution``) are already
  applied by ``fn.log_prob``.
- scales (``poutine.scale``, a subsampled plate nested inside the data plate): whatever a site's
  ``scale`` holds beyond the data plate's own subsampling scale is that site's *relative* scale, a
  float or a tensor broadcastable over its batch shape. It multiplies the site's term elementwise in
  :attr:`Site.scaled_log_prob` (what the ELBOs sum, as ``Trace_ELBO`` does); importance weights
  use the unscaled :attr:`Site.log_prob` and accept only a scale shared by every site of a
  datapoint (:meth:`PairTrace.datapoint_scale`): see there why.
- ``pyro.factor`` in the guide is part of log q (``Trace_ELBO`` subtracts it too).

**Global latents.** A site outside the ``"data"`` plate (Bayesian decoder weights ``w``, a shared
hyper-parameter) is shared by every datapoint of a particle: it is drawn once per particle (the
particle plate still wraps it, so K particles hold K independent draws) and reduced to shape
``(K,)``, not ``(K, B)``. Its terms live apart from the per-datapoint ones
(:attr:`PairTrace.global_model_sites`, :attr:`PairTrace.global_guide_sites`), so that

- the ELBO of the dataset is estimated as ``N / B * sum_b local_b + global``, the global term
  ``log p(w) - log q(w)`` (or its analytic KL) counted once per minibatch, never per datapoint
  (Kingma & Welling 2014, appendix F; what ``Trace_ELBO`` computes with a subsampled data plate);
- the per-datapoint log-weights (:meth:`PairTrace.log_weights`) hold the local terms only:
  ``log p(x_i, z_i | w) - log q(z_i | x_i, w)`` at the particle's ``w``. Their logmeanexp over
  particles, each with its own ``w ~ q(w)``, estimates ``log E_q(w)[p(x_i | w)]``, the log density of
  ``x_i`` under the posterior predictive, which is what ``iwae`` bounds per datapoint and what
  ``log_likelihood`` estimates for a pair with global latents (see there).

The contract the pair must follow (checked here, with an error that says how to fix it):
local latents and the observed ``"x"`` sit inside ``pyro.plate("data", ...)``; event dimensions are
declared with ``.to_event``; every latent the model samples is also sampled by the guide.

References:
  Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix F (full VB over the weights).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Union

import pyro
import torch
from pyro import poutine
from pyro.distributions import Unit
from pyro.distributions.util import is_identically_one, scale_and_mask
from pyro.poutine.util import site_is_subsample

from ppvae.distributions import normal_parts
from ppvae.errors import ConfigError

DATA_PLATE = "data"
PARTICLE_PLATE = "_ppvae_particles"

#: a site's scale relative to the data plate's: a float, or a tensor broadcastable to its batch shape
Scale = Union[float, torch.Tensor]


@dataclass
class Site:
    """One sample site's contribution, reduced to ``(K, B)`` (particles x datapoints)."""

    name: str
    log_prob: torch.Tensor  # (K, B) masked log-density of the value, without any scale
    fn: Any
    value: torch.Tensor
    is_observed: bool
    is_factor: bool
    scaled_log_prob: torch.Tensor | None = None  # (K, B) masked and times ``scale``; None: = log_prob
    scale: Scale = 1.0  # relative scale (beyond the data plate's subsampling), as Pyro holds it
    mask: Any = None  # the site's ``mask`` field (None, a bool or a BoolTensor), already applied
    datapoint_scale: Scale | None = 1.0  # ``scale`` as (K|1, B|1), or None if it varies inside a datapoint

    def __post_init__(self) -> None:
        if self.scaled_log_prob is None:
            self.scaled_log_prob = self.log_prob

    def term(self, scaled: bool) -> torch.Tensor:
        """The (K, B) log-prob, with the site's relative scale (``scaled``) or without."""
        return self.scaled_log_prob if scaled else self.log_prob

    def normal_params(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """``(loc, scale, event dims)`` when ``fn`` is a diagonal Normal (:func:`ppvae.distributions.normal_parts`)."""
        return normal_parts(self.fn)


@dataclass
class PairTrace:
    """The reduced traces of one guide run and the model replayed against it."""

    model_sites: dict[str, Site]
    guide_sites: dict[str, Site]  # latents and observed guide sites (``pyro.factor``)
    scale: float  # data-plate subsampling scale times num_data / plate size: multiplies the per-datapoint sum
    data_factor: float  # num_data / plate size alone (what a Pyro ELBO still needs applied)
    particle_dim: int
    data_dim: int
    batch_size: int
    guide_order: list[str] = field(default_factory=list)  # every sample site, local and global, as traced
    model_order: list[str] = field(default_factory=list)
    global_model_sites: dict[str, Site] = field(default_factory=dict)  # outside the data plate: log_prob (K,)
    global_guide_sites: dict[str, Site] = field(default_factory=dict)

    @property
    def has_globals(self) -> bool:
        """True when the pair has sites outside the data plate (global latents, global factors)."""
        return bool(self.global_model_sites or self.global_guide_sites)

    def model_site(self, name: str) -> Site:
        """The model's site ``name``, local or global."""
        site = self.model_sites.get(name)
        return site if site is not None else self.global_model_sites[name]

    def global_log_weight(self, beta: float = 1.0, scaled: bool = True) -> torch.Tensor:
        """The global part of log p - log q per particle, shape (K,) (or (1,)): global
        observations, plus ``beta`` times (global latents and factors of the model minus the
        guide's global sites). ``beta`` is the KL warm-up weight, applied as to the local terms.
        Zero (a 0-dim tensor) for a pair without global sites."""
        lik = [s.term(scaled) for s in self.global_model_sites.values() if s.is_observed and not s.is_factor]
        latent = [s.term(scaled) for s in self.global_model_sites.values() if not s.is_observed or s.is_factor]
        latent += [-s.term(scaled) for s in self.global_guide_sites.values()]
        total = _sum(lik) if lik else None
        if latent:
            part = _sum(latent)
            part = part if beta == 1.0 else beta * part
            total = part if total is None else total + part
        if total is None:
            return torch.zeros(())
        return total

    @property
    def reparameterized(self) -> bool:
        """True when every guide site can be sampled with rsample (pathwise gradients)."""
        return all(s.fn.has_rsample for d in (self.guide_sites, self.global_guide_sites) for s in d.values())

    def log_likelihood_terms(self, scaled: bool = False) -> torch.Tensor:
        """Sum of observed, non-factor model sites: log p(x | z), shape (K, B). Local sites only,
        here and in the two methods below: global ones are in :meth:`global_log_weight`."""
        return _sum(s.term(scaled) for s in self.model_sites.values() if s.is_observed and not s.is_factor)

    def log_prior_terms(self, scaled: bool = False) -> torch.Tensor:
        """Latent model sites and ``pyro.factor`` sites: log p(z) (+ factors), shape (K, B)
        (zeros when the model has no local latent, e.g. only global weights)."""
        total = _sum_or_none(s.term(scaled) for s in self.model_sites.values() if not s.is_observed or s.is_factor)
        return torch.zeros_like(self.log_likelihood_terms(scaled)) if total is None else total

    def log_guide_terms(self, scaled: bool = False) -> torch.Tensor:
        """log q(z | x), guide ``pyro.factor`` sites included, shape (K, B) (zeros without local
        guide sites)."""
        total = _sum_or_none(s.term(scaled) for s in self.guide_sites.values())
        return torch.zeros_like(self.log_likelihood_terms(scaled)) if total is None else total

    def log_weights(self, beta: float = 1.0, scaled: bool = False) -> torch.Tensor:
        """log p(x, z) - log q(z | x) per particle and datapoint, shape (K, B); ``beta`` tempers
        the prior/guide part (KL warm-up) and leaves the likelihood alone. ``scaled`` multiplies
        each site's term by its own relative scale (what an ELBO sums); importance weights need
        the unscaled terms."""
        lik = self.log_likelihood_terms(scaled)
        prior = _sum_or_none(s.term(scaled) for s in self.model_sites.values() if not s.is_observed or s.is_factor)
        guide = _sum_or_none(s.term(scaled) for s in self.guide_sites.values())
        if prior is None and guide is None:  # no local latent (a model with global latents only)
            return lik.expand(max(lik.shape[0], self._particles()), lik.shape[1])
        latent = -guide if prior is None else (prior if guide is None else prior - guide)
        return lik + (latent if beta == 1.0 else beta * latent)

    def _particles(self) -> int:
        """K, read from the global sites' draws (local terms alone may not show it)."""
        return max([1] + [s.log_prob.shape[0] for s in self.global_guide_sites.values()])

    def sites(self) -> Iterable[tuple[str, Site]]:
        """Every site, model first, with a label that says whose it is."""
        yield from ((f"model site {n!r}", s) for n, s in self.model_sites.items())
        yield from ((f"guide site {n!r}", s) for n, s in self.guide_sites.items())

    def datapoint_scale(self, what: str) -> Scale:
        """The relative scale every site of each datapoint shares: 1.0, a float, or shape (B,).

        A scale shared by all sites of datapoint i (``poutine.scale`` around model and guide alike:
        a weight on the datapoint, or a loss normalization) factors out of its log-weights and can
        multiply its importance-weighted bound after the logsumexp, exactly as the data plate's
        scale does. A scale on *some* sites (a tempered likelihood, an up-weighted KL) makes the
        weights those of an unnormalized density, whose logmeanexp is no bound on log p(x); a
        scale that varies across particles cannot be taken out of the logsumexp. Both raise a
        :class:`ConfigError` naming the site and saying what to do: ``what`` names the caller.
        """
        labelled = [(label, s) for label, s in self.sites() if s.mask is not False]  # False: no term
        if all(isinstance(s.datapoint_scale, float) and s.datapoint_scale == 1.0 for _, s in labelled):
            return 1.0
        first_label, first = labelled[0]
        common = _check_per_datapoint(first_label, first, what)
        for label, site in labelled[1:]:
            if not values_equal(_check_per_datapoint(label, site, what), common, exact=False):
                raise ConfigError(
                    f"{what}: {label} has a scale (poutine.scale or a subsampled plate) different from "
                    f"{first_label}'s; inside an importance-weighted estimate a scale on some sites only "
                    "tempers the weights, and the result is no bound on (and no estimate of) log p(x). "
                    f"{_SCALE_ADVICE}"
                )
        if isinstance(common, float):
            return common
        return common.reshape(-1).expand(self.batch_size) if common.numel() == 1 else common[0]


_SCALE_ADVICE = (
    "Train with objective 'elbo' or 'elbo-analytic', which honour any scale as Pyro's Trace_ELBO does; "
    "for 'iwae' or log_likelihood, apply one scale to every site of model and guide alike (a weight "
    "per datapoint, computed from the data) or remove it"
)


def _check_per_datapoint(label: str, site: Site, what: str) -> Scale:
    """The site's scale as a float or a (1, B|1) tensor, or a ConfigError saying why it is neither."""
    s = site.datapoint_scale
    if s is None:
        raise ConfigError(
            f"{what}: {label} has a scale that varies inside a datapoint (across an inner plate or "
            f"event); importance weights can only take a scale shared by every site of a datapoint. {_SCALE_ADVICE}"
        )
    if isinstance(s, torch.Tensor) and s.shape[0] > 1 and not bool((s == s[:1]).all()):
        raise ConfigError(
            f"{what}: {label} has a scale that varies across particles (computed from sampled "
            f"values), which cannot be taken out of the logsumexp over particles. {_SCALE_ADVICE}"
        )
    return s[:1] if isinstance(s, torch.Tensor) else s


def values_equal(a: Any, b: Any, exact: bool = True) -> bool:
    """Equal after broadcasting: masks (None, bools, BoolTensors), numbers or tensors.
    ``exact=False`` allows float rounding: the same scale reached through handlers applied in
    another order may differ in the last bit."""
    if a is b:
        return True
    if a is None or b is None:  # a missing mask is an all-True one
        a, b = (True if v is None else v for v in (a, b))
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        return a == b if exact else abs(a - b) <= 1e-6 * max(abs(a), abs(b))
    ref = a if isinstance(a, torch.Tensor) else b
    ta, tb = (torch.as_tensor(v, device=ref.device) for v in (a, b))
    try:
        ta, tb = torch.broadcast_tensors(ta, tb)
    except RuntimeError:
        return False
    if exact or ta.dtype == torch.bool or tb.dtype == torch.bool:
        return bool(torch.equal(ta, tb))
    return bool(torch.allclose(ta.to(tb.dtype), tb, rtol=1e-6, atol=0.0))


def _sum_or_none(terms) -> torch.Tensor | None:
    total = None
    for t in terms:
        total = t if total is None else total + t
    return total


def _sum(terms) -> torch.Tensor:
    total = _sum_or_none(terms)
    if total is None:
        raise ConfigError("the model/guide pair has no sample sites to score")
    return total


# --- the structure probe, once per (model, guide) ---------------------------------------------


@dataclass(frozen=True)
class PairProbe:
    """What one extra trace of a pair tells about it, cached per (model, guide)."""

    nesting: int  # how many plate dims the pair uses: the particle plate goes one further left
    score_function_sites: tuple[str, ...]  # guide sites without rsample (discrete latents, ...)
    global_sites: tuple[str, ...] = ()  # guide latents outside the data plate (e.g. Bayesian weights)
    global_elements: int = 0  # numbers one particle's global guide latents hold (memory per particle)

    @property
    def reparameterized(self) -> bool:
        return not self.score_function_sites


# Where the particle plate goes depends on how deeply the pair nests its own plates, and whether the
# lean objectives apply depends on the guide's sites having rsample. Both are found once per
# (model, guide) with an extra trace and cached, weakly on both objects (JIT-style caching on object
# identity: pass stable callables, not fresh bound methods, to keep the cache hot). Weak keys on both
# mean an entry dies with its model or guide and a recycled id() can never find a stale entry.
_PROBES: "weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, PairProbe]]" = weakref.WeakKeyDictionary()
# The probe of the pair whose compiled loss is running (ppvae.compile). Under torch.compile the
# cache above must not be read: dynamo guards on the weak dictionaries' contents, which the garbage
# collector can change while inductor compiles, and it then fails with an IndexError from inside
# torch (seen in the test suite once enough pairs of earlier tests had died).
_PINNED: "PairProbe | None" = None


@contextmanager
def pinned_probe(probe: "PairProbe"):
    """While this is open, a compiled region's ``probe_pair`` returns ``probe`` (not the cache)."""
    global _PINNED
    previous, _PINNED = _PINNED, probe
    try:
        yield
    finally:
        _PINNED = previous


def probe_pair(model: Callable, guide: Callable, x: torch.Tensor, args: tuple = (), kwargs: dict | None = None) -> PairProbe:
    """The pair's plate nesting and non-reparameterized guide sites, from a cached extra trace that
    does not consume the caller's random numbers."""
    if _PINNED is not None and torch.compiler.is_compiling():
        return _PINNED
    kwargs = kwargs or {}
    try:
        cached = _PROBES[model][guide]
    except (KeyError, TypeError):  # not seen yet, or not weak-referenceable (then never cached)
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
    discrete = tuple(n for n, s in _sample_sites(guide_tr).items() if not s["fn"].has_rsample)
    glob = {n: s for n, s in _sample_sites(guide_tr).items() if not s["is_observed"] and not is_local(s)}
    probe = PairProbe(nesting, discrete, tuple(glob), sum(int(s["value"].numel()) for s in glob.values()))
    try:
        _PROBES.setdefault(model, weakref.WeakKeyDictionary())[guide] = probe
    except TypeError:
        pass
    return probe


def _sample_sites(tr):
    return {n: s for n, s in tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}


def is_local(site: dict) -> bool:
    """True for a trace node inside the ``"data"`` plate (one value per datapoint); False for a
    global site, shared by the datapoints of a particle."""
    return any(f.name == DATA_PLATE for f in site["cond_indep_stack"])


def local_sample_sites(tr) -> dict[str, dict]:
    """The sample sites of a trace inside the data plate: the per-datapoint latents and
    observations (what posterior means, active units and latent scatter plots are about)."""
    return {n: s for n, s in _sample_sites(tr).items() if is_local(s)}


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
    # Sites outside the data plate are global latents (scored once per particle); but the data
    # themselves must be inside it, or there is nothing per datapoint to score.
    observed = {n: s for n, s in _sample_sites(model_tr).items() if s["is_observed"] and not isinstance(s["fn"], Unit)}
    if not any(is_local(s) for s in observed.values()):
        outside = sorted(n for n, s in observed.items() if not is_local(s))
        where = (f"model site {outside[0]!r} is outside pyro.plate({DATA_PLATE!r}, ...)" if outside
                 else "the model observes nothing")
        raise ConfigError(
            f"{where}: ppvae scores each datapoint separately, so the observation (and local latents) "
            f"must sit inside pyro.plate({DATA_PLATE!r}, x.shape[0]); only global latents shared by all "
            "datapoints (e.g. Bayesian weights) go outside it"
        )


# --- the traced pair ------------------------------------------------------------------------


def trace_pair(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *args,
    num_particles: int = 1,
    num_data: int | None = None,
    score_globals: bool = True,
    **kwargs,
) -> PairTrace:
    """Run ``guide(x, *args, **kwargs)`` under a particle plate of size ``num_particles``, replay
    ``model`` against it, and reduce every sample site to ``(num_particles, B)``.

    ``num_data`` is the size of the dataset the minibatch ``x`` comes from: the returned ``scale``
    turns a sum over the minibatch into an estimate of the sum over the dataset (N / B), counting
    the scale a ``subsample``d data plate of size N applies itself (it already carries N / B).
    Scales the pair adds on top (``poutine.scale``) stay with their sites (:class:`Site`).
    ``score_globals=False`` leaves the sites outside the data plate out (their log-densities are
    not computed): for estimates made of the per-datapoint terms alone, such as ``log_likelihood``,
    to which the prior and posterior densities of a decoder's weights are pure cost.
    """
    nesting = probe_pair(model, guide, x, args, kwargs).nesting
    from ppvae.direct import direct_trace  # here, not at the top: ppvae.direct builds on this module

    direct = direct_trace(model, guide, x, args, kwargs, nesting, num_particles, num_data)
    if direct is not None:  # story modules: the same PairTrace without Pyro's per-site machinery
        return direct
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
    plate_scale = data_factor = 1.0
    data_dim = -1
    sites: list[dict[str, Site]] = [{}, {}]
    global_sites: list[dict[str, Site]] = [{}, {}]
    orders: list[list[str]] = [[], []]
    for i, tr in enumerate((model_tr, guide_tr)):
        for name, node in tr.nodes.items():
            if node["type"] != "sample" or site_is_subsample(node) or (node.get("infer") or {}).get("_deterministic"):
                continue  # pyro.deterministic sites are masked out: they never contribute
            frame = next((f for f in node["cond_indep_stack"] if f.name == DATA_PLATE), None)
            if frame is None:  # a global site: one value per particle, shared by the minibatch
                if score_globals:
                    global_sites[i][name] = _reduce_global_site(name, node, particle_dim, num_particles)
                    orders[i].append(name)
                continue
            if batch is None:
                batch = frame.size  # the (sub)sample size; full_size is the plate's declared size
                data_dim = frame.dim
                full = frame.full_size if frame.full_size is not None else frame.size
                plate_scale = full / frame.size
                data_factor = num_data / full if num_data is not None else 1.0
            sites[i][name] = _reduce_site(name, node, frame.dim, particle_dim, batch, num_particles, plate_scale)
            orders[i].append(name)
    if batch is None:
        _check_structure(model_tr, guide_tr)  # raises: nothing inside the data plate
    scale = plate_scale * data_factor
    return PairTrace(sites[0], sites[1], scale, data_factor, particle_dim, data_dim, batch, orders[1], orders[0],
                     global_sites[0], global_sites[1])


def _reduce_global_site(name: str, node: dict, particle_dim: int, num_particles: int) -> Site:
    """A site outside the data plate as a :class:`Site` of shape (K,) (or (1,) when it does not
    vary across particles): masked, summed over every dim but the particle dim. Its ``scale`` is
    the site's own (``poutine.scale``): no data-plate subsampling factor applies to it."""
    raw = node["fn"].log_prob(node["value"])
    mask = node["mask"]
    masked = scale_and_mask(raw, 1.0, mask)
    if not isinstance(masked, torch.Tensor):  # mask=False: Pyro's 0.0, as a tensor on the site's device
        masked = raw.new_zeros(())
    lp = sum_to_particles(masked, name, particle_dim, num_particles)
    site = Site(name, lp, node["fn"], node["value"], node["is_observed"], isinstance(node["fn"], Unit),
                mask=mask, datapoint_scale=None)
    scale = node["scale"]
    if not is_identically_one(scale):
        site.scale = scale
        site.scaled_log_prob = sum_to_particles(masked * scale, name, particle_dim, num_particles)
    return site


def sum_to_particles(lp: torch.Tensor, name: str, particle_dim: int, num_particles: int) -> torch.Tensor:
    """A global site's log-prob summed over every dim but the particle dim -> (K,) or (1,)."""
    ndim = -particle_dim
    if lp.dim() > ndim:
        raise ConfigError(
            f"global site {name!r}: log_prob has batch shape {tuple(lp.shape)}, more dimensions than the "
            f"pair's plates ({ndim - 1}) allow; declare the event dimensions with .to_event(...)"
        )
    if lp.dim() < ndim:
        lp = lp.reshape((1,) * (ndim - lp.dim()) + lp.shape)
    lp = lp.reshape(lp.shape[0], -1).sum(1)
    if lp.shape[0] not in (1, num_particles):
        raise ConfigError(
            f"global site {name!r}: log_prob has {lp.shape[0]} entries where the {num_particles} particles "
            "go; did you forget .to_event(...) on its distribution?"
        )
    return lp


def _reduce_site(name: str, node: dict, data_dim: int, particle_dim: int, batch: int, num_particles: int, plate_scale: float) -> Site:
    """A trace node as a :class:`Site`: its mask applied, its scale relative to the data plate's
    subsampling scale split off, both (K, B) reductions."""
    raw = node["fn"].log_prob(node["value"])  # MaskedDistribution masks are applied in here
    mask = node["mask"]
    masked = scale_and_mask(raw, 1.0, mask)
    lp = reduce_to_particles_by_data(masked, name, data_dim, particle_dim, batch)
    if lp.shape[0] not in (1, num_particles):
        # a batch dim sits where the particles go: e.g. Normal(loc, scale) over a (B, D)
        # loc without .to_event(1) when D == B, which the plate's shape check lets through
        raise ConfigError(
            f"site {name!r}: log_prob has batch shape {tuple(node['fn'].batch_shape)}, one "
            f"dimension more than the plates around it; did you forget .to_event(...) on its "
            "distribution?"
        )
    scale = _relative_scale(node["scale"], plate_scale)
    site = Site(name, lp, node["fn"], node["value"], node["is_observed"], isinstance(node["fn"], Unit), mask=mask)
    if is_identically_one(scale):
        return site
    site.scale = scale
    site.scaled_log_prob = reduce_to_particles_by_data(masked * scale, name, data_dim, particle_dim, batch)
    site.datapoint_scale = _as_datapoint_scale(scale, -particle_dim, data_dim)
    return site


def _relative_scale(scale: Scale, plate_scale: float) -> Scale:
    """The site's scale without the data plate's subsampling factor (applied once per minibatch)."""
    if plate_scale == 1.0:
        return scale
    if isinstance(scale, torch.Tensor):
        return scale / plate_scale
    rel = scale / plate_scale
    return 1 if abs(rel - 1.0) < 1e-12 else rel


def _as_datapoint_scale(scale: Scale, ndim: int, data_dim: int) -> Scale | None:
    """``scale`` as a float or a (K|1, B|1) tensor, or None when it differs between the elements of
    one datapoint (an inner plate or a particle-and-inner pattern)."""
    if not isinstance(scale, torch.Tensor):
        return float(scale)
    if scale.numel() == 1:
        return float(scale)
    if scale.dim() > ndim:
        return None
    t = scale.reshape((1,) * (ndim - scale.dim()) + scale.shape)
    other = [d for d in range(1, ndim) if d != ndim + data_dim]
    if other:
        hi = t.amax(other)
        if not torch.equal(hi, t.amin(other)):
            return None
        t = hi
    return t.reshape(t.shape[0], -1)


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
