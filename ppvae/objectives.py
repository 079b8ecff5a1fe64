"""Training objectives, selectable by name: ``elbo``, ``elbo-analytic``, ``iwae``, and the
importance-weighted family of :mod:`ppvae.iw_bounds` (``renyi``, ``miwae``, ``ciwae``, ``piwae``).

Each objective is a small callable object. ``loss(model, guide, x, num_data=N)`` returns the
differentiable *negative* bound for a minibatch, scaled to the whole dataset (N / B times the sum of
the per-datapoint bounds); ``bound(model, guide, x)`` returns the per-datapoint bound, shape (B,).

``elbo`` and ``elbo-analytic`` compute exactly what Pyro's ``Trace_ELBO`` and
``TraceMeanField_ELBO`` compute for reparameterized pairs (the tests check equality on the same
random numbers) from one lean trace per step, without the per-step bookkeeping that makes a naive
Pyro loop 1.3-1.7x slower than plain PyTorch on small networks (DESIGN fact 4). Pairs with
non-reparameterizable sites (discrete latents) fall back to Pyro's own ELBO classes.

Handlers in a pair are honoured (see ``ppvae.traces``): masked terms contribute 0 in every
objective; ``elbo`` and ``elbo-analytic`` multiply each site's term by its own scale (per site and
per datapoint, as ``Trace_ELBO`` does); ``iwae`` takes a scale only when every site of a datapoint
shares it (a datapoint weight, applied after the logsumexp) and raises ``ConfigError`` for a scale
on some sites only, which would temper the importance weights into no bound at all.

Global latents (sites outside the data plate, e.g. Bayesian decoder weights w; ``ppvae.traces``)
are drawn once per particle and shared by the minibatch. ``loss`` is then minus

    N / B * sum_b bound_b  +  global,      global = E_q(w)[log p(w) - log q(w)]  (= -KL(q(w) || p(w)))

with the global term counted once per minibatch (:meth:`Objective.global_term`): Monte Carlo for
``elbo`` (as ``Trace_ELBO`` with a subsampled data plate), the analytic KL where valid for
``elbo-analytic`` and ``iwae`` (outside the logsumexp it changes nothing in expectation); the KL
warm-up weight ``beta`` multiplies it as it multiplies the local KL. ``bound`` returns the local,
per-datapoint part alone, at each particle's own w: for the ELBOs a lower bound on
E_q(w)[log p(x_i | w)], for ``iwae`` with k particles (k draws of w) a lower bound on the log
posterior predictive density log E_q(w)[p(x_i | w)] that tightens as k grows; both are what a
validation or test set is scored by, comparable with a point-estimate model's bound on log p(x_i).
With k > 1, ``iwae``'s loss is then not a bound on log p(X): sum_i log E_q(w)[p(x_i | w)] - KL is at
least the ELBO (Jensen), the "PAC^m-Bayes" objective of Morningstar, Alemi & Dillon (2022), which
trains the posterior predictive; with k = 1 it is the ELBO.

Each objective also takes a gradient estimator for the guide (``grad_estimator``, see
:mod:`ppvae.grad_estimators`): ``reparam`` (the default, the gradient of the bound as written),
``stl`` for ``elbo`` and ``dreg`` for ``iwae`` and ``renyi``; they change gradients, never values.

References:
  Kingma & Welling (2014), Auto-Encoding Variational Bayes: estimators A (Monte Carlo KL) and B
  (analytic KL); appendix F, full variational Bayes over the weights. Burda, Grosse &
  Salakhutdinov (2016), Importance Weighted Autoencoders. Morningstar, Alemi & Dillon (2022),
  PAC^m-Bayes: Narrowing the Empirical Risk Gap in the Misspecified Bayesian Regime.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import math
import numbers
from typing import Any, Callable

import pyro
import torch
from pyro.distributions import MaskedDistribution
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from torch.distributions import kl_divergence
from torch.distributions.kl import _KL_REGISTRY

from ppvae.distributions import normal_kl
from ppvae.errors import ConfigError
from ppvae.grad_estimators import check_name as check_estimator_name
from ppvae.grad_estimators import path_log_weights, reweight_path_gradients
from ppvae.traces import (
    DATA_PLATE,
    PairTrace,
    Site,
    sum_to_particles,
    probe_pair,
    reduce_to_particles_by_data,
    trace_pair,
    values_equal,
)


class Objective(abc.ABC):
    """Base class: a bound on log p(x) estimated with ``num_particles`` samples per datapoint.
    A new objective overrides one hook, :meth:`per_datapoint`, reading the log-weights through
    :meth:`log_weights` so that the gradient estimators apply to it.

    ``grad_estimator`` names the guide's gradient estimator (:mod:`ppvae.grad_estimators`); an
    objective lists the ones it supports in ``grad_estimators``. Options beyond ``num_particles``
    are keyword arguments of the subclass's constructor, reported by :meth:`options`."""

    name = ""
    summary = ""  # one line for ``ppvae list``: the bound and its paper
    grad_estimators: tuple[str, ...] = ("reparam",)
    #: why an estimator is refused, by estimator name (the default message lists the supported ones)
    estimator_advice: dict[str, str] = {}

    def __init__(self, num_particles: int = 1, grad_estimator: str = "reparam"):
        if isinstance(num_particles, bool) or not isinstance(num_particles, numbers.Real) \
                or int(num_particles) != num_particles or num_particles < 1:
            raise ConfigError(f"num_particles must be a positive integer, got {num_particles!r}")
        self.num_particles = int(num_particles)
        grad_estimator = check_estimator_name(grad_estimator)
        if grad_estimator not in self.grad_estimators:
            advice = self.estimator_advice.get(grad_estimator, "")
            raise ConfigError(
                f"objective {self.name!r} does not support grad_estimator {grad_estimator!r}"
                f"{': ' + advice if advice else ''}; it supports: {', '.join(self.grad_estimators)}"
            )
        if grad_estimator == "dreg" and not callable(getattr(self, "dreg_ratio", None)):
            # an objective that lists "dreg" defines dreg_ratio(log_w) -> (K, B): the doubly
            # reparameterized path coefficient divided by d bound / d log w_k (ppvae.grad_estimators)
            raise ConfigError(f"objective {self.name!r} lists grad_estimator 'dreg' but defines no dreg_ratio(log_w)")
        self.grad_estimator = grad_estimator
        self.validate()

    def validate(self) -> None:
        """Check the options against each other (e.g. num_particles a multiple of groups); called
        by the constructor and :meth:`with_particles`."""

    def options(self) -> dict[str, Any]:
        """The objective's options beyond ``num_particles`` and ``grad_estimator``, as keyword
        arguments of its constructor (what a run's config records)."""
        return {}

    def with_particles(self, num_particles: int) -> "Objective":
        """The same objective (options, estimator) with another number of particles."""
        if int(num_particles) == self.num_particles:
            return self
        return type(self)(num_particles, grad_estimator=self.grad_estimator, **self.options())

    @abc.abstractmethod
    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        """The bound of each datapoint of the traced minibatch, shape (B,)."""

    def log_weights(self, tr: PairTrace, beta: float = 1.0, scaled: bool = False) -> torch.Tensor:
        """``tr.log_weights(beta, scaled)``, (K, B), with the gradients of this objective's
        estimator: the same values; for ``stl``/``dreg`` phi's gradient comes through z only, and
        for ``dreg`` it is re-weighted by the objective's ``dreg_ratio``."""
        if self.grad_estimator == "reparam" or not torch.is_grad_enabled():
            return tr.log_weights(beta, scaled)
        what = f"objective {self.name!r} with grad_estimator {self.grad_estimator!r}"
        log_w = path_log_weights(tr, what, beta, scaled)
        if self.grad_estimator == "dreg" and log_w.shape[0] > 1:
            reweight_path_gradients(tr, self.dreg_ratio(log_w.detach()))
        return log_w

    def global_term(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        """The part of the bound from sites outside the data plate, counted once per minibatch:
        the mean over particles of log p(w) - log q(w) (plus global factors and observations),
        with ``beta`` on the latent part. Monte Carlo here; :class:`AnalyticELBO` and :class:`IWAE`
        use the analytic KL where it is valid."""
        return tr.global_log_weight(beta, scaled=True).mean()

    def bound(self, model: Callable, guide: Callable, x: torch.Tensor, *args, beta: float = 1.0, **kwargs) -> torch.Tensor:
        """The per-datapoint bound, shape (B,). For a pair with global latents, the local part at
        each particle's own draw of them, without the global term (see the module docstring)."""
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
        # the probe is cached per pair and runs under fork_rng: the fallback draws what Pyro would
        probe = probe_pair(model, guide, x, args, kwargs)
        if not probe.reparameterized and self.grad_estimator != "reparam":
            raise ConfigError(
                f"grad_estimator {self.grad_estimator!r} needs reparameterized guide sites (rsample), and guide "
                f"sites {list(probe.score_function_sites)} have none; use grad_estimator 'reparam'"
            )
        if not probe.reparameterized:  # discrete latents: let Pyro's estimator handle them
            return self._pyro_fallback(model, guide, x, args, kwargs, num_data, beta, probe.score_function_sites)
        tr = trace_pair(model, guide, x, *args, num_particles=self.num_particles, num_data=num_data, **kwargs)
        loss = -tr.scale * self.per_datapoint(tr, beta).sum()
        if tr.has_globals:  # counted once per minibatch, not per datapoint
            loss = loss - self.global_term(tr, beta)
        return loss

    def _pyro_fallback(
        self, model: Callable, guide: Callable, x: torch.Tensor, args: tuple, kwargs: dict,
        num_data: int | None, beta: float, sites: tuple[str, ...],
    ) -> torch.Tensor:
        raise ConfigError(
            f"objective {self.name!r} needs reparameterizable guide sites (rsample), and guide sites "
            f"{list(sites)} have none (a discrete latent, or a pyro.factor without has_rsample=True); "
            "use 'elbo', which falls back to Pyro's Trace_ELBO score-function estimator for them"
        )

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.options().items())
        est = f", grad_estimator={self.grad_estimator!r}" if self.grad_estimator != "reparam" else ""
        return f"{type(self).__name__}(num_particles={self.num_particles}{extra}{est})"


class ELBO(Objective):
    """Monte Carlo ELBO (estimator A): mean over L particles of log p(x, z) - log q(z | x).
    Equal to ``pyro.infer.Trace_ELBO(num_particles=L, vectorize_particles=True)``."""

    name = "elbo"
    summary = "Monte Carlo ELBO, = Pyro's Trace_ELBO (Kingma & Welling 2014, estimator A)"
    grad_estimators = ("reparam", "stl")
    estimator_advice = {"dreg": "for the ELBO the doubly reparameterized gradient is 'stl'"}

    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        return self.log_weights(tr, beta, scaled=True).mean(0)

    def _pyro_fallback(
        self, model: Callable, guide: Callable, x: torch.Tensor, args: tuple, kwargs: dict,
        num_data: int | None, beta: float, sites: tuple[str, ...],
    ) -> torch.Tensor:
        if beta != 1.0:
            raise ConfigError("KL warm-up needs reparameterizable latents; set kl_warmup_epochs=0")
        elbo = pyro.infer.Trace_ELBO(num_particles=self.num_particles, vectorize_particles=self.num_particles > 1)
        if num_data is None:
            return elbo.differentiable_loss(model, guide, x, *args, **kwargs)
        with DataScale(num_data):
            return elbo.differentiable_loss(model, guide, x, *args, **kwargs)


class DataScale(Messenger):
    """Scales every site in the data plate by ``num_data / plate size``, read from the site's own
    plate frame on every call: the N / B of *this* minibatch (an epoch's last, partial batch has its
    own B). A ``subsample``d data plate of size N already carries N / B, and gets N / N = 1 here."""

    def __init__(self, num_data: int):
        super().__init__()
        self.num_data = num_data

    def _process_message(self, msg: dict) -> None:
        frame = next((f for f in msg["cond_indep_stack"] if f.name == DATA_PLATE), None)
        if msg["type"] == "sample" and frame is not None:
            full = frame.full_size if frame.full_size is not None else frame.size
            msg["scale"] = msg["scale"] * (self.num_data / full)


class AnalyticELBO(Objective):
    """ELBO with the analytic KL where it is valid (estimator B), Monte Carlo elsewhere.
    Equal to ``pyro.infer.TraceMeanField_ELBO`` on mean-field pairs.

    The analytic KL(q(z_s | .) || p(z_s | .)) replaces log q - log p of site s only when every
    latent the model's p(z_s | .) can depend on (the model sites before s) is sampled by the guide
    before s; otherwise (e.g. z1 of a two-layer VAE, whose prior depends on z2, sampled after z1 by
    the guide) the Monte Carlo term is kept, which stays unbiased.

    Masks and scales: the KL of site s gets the mask and scale its log q - log p terms would get,
    which is only the same thing when model and guide site carry the same ones (site ``mask`` and
    ``scale`` fields, and masks inside ``fn``); where they differ (say, a mask on the model's z
    only) the site keeps its Monte Carlo term. ``TraceMeanField_ELBO`` applies the guide site's
    mask and scale to the KL in every case, which is biased in the second.
    """

    name = "elbo-analytic"
    summary = "ELBO with the analytic KL where valid, = TraceMeanField_ELBO (Kingma & Welling 2014, estimator B)"
    estimator_advice = {
        "stl": "the analytic KL has no per-sample score term to drop (sticking the landing is defined for the "
               "Monte Carlo ELBO): use objective 'elbo' with grad_estimator 'stl'",
        "dreg": "use objective 'elbo' with grad_estimator 'stl', or 'iwae' with 'dreg'",
    }

    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        latent = None
        for name, q in tr.guide_sites.items():
            if q.is_observed:  # pyro.factor in the guide: part of log q, Monte Carlo
                term = q.scaled_log_prob
            else:
                p = tr.model_sites[name]
                kl = _analytic_kl(q, p) if _kl_is_valid(tr, name) else None
                term = q.scaled_log_prob - p.scaled_log_prob if kl is None else _kl_to_kb(kl, q, tr)
            latent = term if latent is None else latent + term
        factors = [s.scaled_log_prob for s in tr.model_sites.values() if s.is_factor]
        for f in factors:  # pyro.factor sites (e.g. a learned prior correction) stay Monte Carlo
            latent = -f if latent is None else latent - f
        lik = tr.log_likelihood_terms(scaled=True)
        if latent is None:
            return lik.mean(0)
        return (lik - (latent if beta == 1.0 else beta * latent)).mean(0)

    def global_term(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        return _analytic_global_term(tr, beta)


class ImportanceWeighted(Objective):
    """Base of the bounds that are a function of each datapoint's *unscaled* log-weights, (K, B)
    -> (B,) (:meth:`from_log_weights`): the datapoint's scale (the data plate's N / B, a
    ``poutine.scale`` shared by all its sites) multiplies the bound after that function, never
    inside it; masks are already in the weights; a scale on some sites only is a ConfigError
    (:meth:`ppvae.traces.PairTrace.datapoint_scale`). The global KL is added once per minibatch,
    analytically where valid."""

    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        weight = tr.datapoint_scale(f"objective {self.name!r}")  # 1.0, or raises for per-site scales
        bound = self.from_log_weights(self.log_weights(tr, beta))  # (k, B) masked, unscaled -> (B,)
        return bound if isinstance(weight, float) and weight == 1.0 else weight * bound

    @abc.abstractmethod
    def from_log_weights(self, log_w: torch.Tensor) -> torch.Tensor:
        """The bound of each datapoint from its log-weights: (K, B) -> (B,)."""

    def global_term(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        # outside the logsumexp: the analytic KL is exact in expectation and has no variance
        return _analytic_global_term(tr, beta)


class IWAE(ImportanceWeighted):
    """Importance-weighted bound with k particles: log (1/k) sum_k w_k per datapoint, then scaled.

    Unlike ``pyro.infer.RenyiELBO(alpha=0)``, which computes logmeanexp(scale * log w) under
    minibatch scaling (a tempered bound, pyro issue 2220), this applies the scale after the
    logsumexp, so the loss is N / B times the sum of per-datapoint IWAE bounds. The same holds for
    a ``poutine.scale`` shared by every site of a datapoint (model and guide alike): it weights
    that datapoint's bound. A scale on some sites only is refused (``ConfigError``): it would
    temper the weights, and the logmeanexp of tempered weights bounds nothing.

    Global latents (Bayesian weights) are drawn once per particle, so the k particles of a
    datapoint see k independent draws of w: its bound tightens towards the log posterior
    predictive log E_q(w)[p(x_i | w)] as k grows; the global KL is added once per minibatch,
    analytically where valid (see the module docstring for what the sum then is).
    """

    name = "iwae"
    summary = "importance-weighted bound log 1/k sum_k w_k (Burda et al. 2016)"
    grad_estimators = ("reparam", "dreg")
    estimator_advice = {"stl": "dropping the score term biases importance-weighted bounds (Tucker et al. 2019); "
                               "use 'dreg', their unbiased doubly reparameterized estimator"}

    def from_log_weights(self, log_w: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])

    def dreg_ratio(self, log_w: torch.Tensor) -> torch.Tensor:
        # d bound / d log w_k = w~_k; DReG's path coefficient is w~_k^2 (Tucker et al. 2019)
        return torch.softmax(log_w, 0)


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (ELBO, AnalyticELBO, IWAE)}


def get_objective(name: str | Objective, num_particles: int = 1, grad_estimator: str = "reparam",
                  **options: Any) -> Objective:
    """An objective by name (see :data:`OBJECTIVES`, ``ppvae list``), or the object passed in.

    ``options`` are the objective's own settings (``alpha`` for ``renyi``, ``groups`` for
    ``miwae`` and ``piwae``, ``beta`` for ``ciwae``); an option it does not take is a ConfigError
    that lists the ones it does."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        close = difflib.get_close_matches(str(name), OBJECTIVES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}.{hint}")
    cls = OBJECTIVES[name]
    known = objective_options(cls)
    unknown = [k for k in options if k not in known]
    if unknown:
        takes = ", ".join(f"{k} (default {v!r})" for k, v in known.items()) or "none"
        raise ConfigError(f"objective {name!r} has no option {unknown[0]!r}; its options: {takes}")
    return cls(num_particles, grad_estimator=grad_estimator, **options)


def objective_options(cls: type[Objective]) -> dict[str, Any]:
    """The options an objective class takes beyond ``num_particles``/``grad_estimator``, with
    their defaults (from its constructor's signature)."""
    params = inspect.signature(cls.__init__).parameters
    return {n: p.default for n, p in params.items()
            if n not in ("self", "num_particles", "grad_estimator") and p.kind == p.KEYWORD_ONLY}


# --- helpers ---------------------------------------------------------------------------------

def _kl_is_valid(tr: PairTrace, name: str) -> bool:
    m_before = tr.model_order[: tr.model_order.index(name)]
    g_before = set(tr.guide_order[: tr.guide_order.index(name)])
    return all(n in g_before for n in m_before if not tr.model_site(n).is_observed)


def _analytic_global_term(tr: PairTrace, beta: float) -> torch.Tensor:
    """The global term with KL(q(w) || p(w)) in closed form where it is valid (as for local sites:
    a registered KL, the same handlers on both sides, every model latent before w sampled by the
    guide before w), Monte Carlo elsewhere; mean over particles."""
    lik = None
    latent = None
    for s in tr.global_model_sites.values():
        if s.is_observed and not s.is_factor:  # a global observation: likelihood, not tempered
            lik = s.scaled_log_prob if lik is None else lik + s.scaled_log_prob
        elif s.is_factor:
            latent = -s.scaled_log_prob if latent is None else latent - s.scaled_log_prob
    for name, q in tr.global_guide_sites.items():
        if q.is_observed:
            term = q.scaled_log_prob
        else:
            p = tr.global_model_sites[name]
            kl = _analytic_kl(q, p) if _kl_is_valid(tr, name) else None
            if kl is None:
                term = q.scaled_log_prob - p.scaled_log_prob
            else:
                if not isinstance(kl, torch.Tensor):
                    kl = torch.zeros_like(q.log_prob)
                term = sum_to_particles(scale_and_mask(kl, q.scale, q.mask), name, tr.particle_dim, q.log_prob.shape[0])
        latent = term if latent is None else latent + term
    total = torch.zeros((), device=next(iter(tr.model_sites.values())).log_prob.device) if lik is None else lik
    if latent is not None:
        total = total - (latent if beta == 1.0 else beta * latent)
    return total.mean()


def _analytic_kl(q: Site, p: Site) -> torch.Tensor | float | None:
    """KL(q || p) of one latent site, or None where it does not replace E_q[log q - log p]: no
    registered KL, or masks/scales that differ between model and guide site."""
    qn, pn = q.normal_params(), p.normal_params()
    if qn is not None and pn is not None and qn[2] == pn[2] and q.mask is None and p.mask is None and q.scale is p.scale:
        # two plain diagonal Normals (no masks inside either: exact types), the common case
        kl = normal_kl(qn, pn)
        batch = q.value.shape[:q.value.dim() - qn[2]]
        return kl if kl.shape == batch else kl.expand(batch)
    # Look up without calling: kl_divergence raises NotImplementedError for unregistered pairs,
    # and exceptions on the hot path are slow.
    if not _has_kl(type(q.fn), type(p.fn)) or not _same_handlers(q, p):
        return None
    try:
        return kl_divergence(q.fn, p.fn)
    except NotImplementedError:
        return None


def _same_handlers(q: Site, p: Site) -> bool:
    """Model and guide site carry the same site mask, the same scale and the same masks in fn."""
    qm, pm = _fn_masks(q.fn), _fn_masks(p.fn)
    if q.mask is None and p.mask is None and q.scale is p.scale and not qm and not pm:
        return True  # the hot path: no handlers at all
    if not (values_equal(q.mask, p.mask) and values_equal(q.scale, p.scale, exact=False)):
        return False
    return len(qm) == len(pm) and all(values_equal(a, b) for a, b in zip(qm, pm))


def _fn_masks(fn: Any) -> list:
    """The masks of the MaskedDistributions wrapped in ``fn`` (through Independent and the like),
    outermost first."""
    masks = []
    while fn is not None:
        if isinstance(fn, MaskedDistribution):
            masks.append(fn._mask)
        fn = getattr(fn, "base_dist", None)
    return masks


_HAS_KL: dict[tuple[type, type], bool] = {}


def _has_kl(tq: type, tp: type) -> bool:
    key = (tq, tp)
    if key not in _HAS_KL:
        _HAS_KL[key] = any(issubclass(tq, a) and issubclass(tp, b) for a, b in _KL_REGISTRY)
    return _HAS_KL[key]


def _kl_to_kb(kl: torch.Tensor | float, q: Site, tr: PairTrace) -> torch.Tensor:
    """The KL with the guide site's mask and scale (the same as the model site's), as (K, B)."""
    if not isinstance(kl, torch.Tensor):  # Pyro's KL of two fully masked distributions: 0.0
        return torch.zeros_like(q.log_prob)
    kl = scale_and_mask(kl, q.scale, q.mask)
    return reduce_to_particles_by_data(kl, "kl", tr.data_dim, tr.particle_dim, tr.batch_size)


# The importance-weighted family lives in its own module (it subclasses the classes above), and is
# registered here so that OBJECTIVES names every objective whichever module is imported first.
from ppvae.iw_bounds import CIWAE, MIWAE, PIWAE, Renyi  # noqa: E402

OBJECTIVES.update({cls.name: cls for cls in (Renyi, MIWAE, CIWAE, PIWAE)})
