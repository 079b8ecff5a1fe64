"""Gradient estimators for the guide: ``reparam`` (the default), ``stl`` and ``dreg``.

Every reparameterized bound's gradient with respect to the guide's parameters phi has two parts,
for z = z(eps, phi):

    d/dphi log w(z)  =  d log w / dz * dz/dphi   (path)   -  d log q_phi(z | x) / dphi |_z   (score)

``reparam`` keeps both: the gradient of the bound as written. The score part has expectation zero
under q (for the ELBO), or is a weighted sum that can be rewritten as a path term (for importance
weighted bounds), so it can be dropped or rewritten without changing the mean; it is pure noise
near a good guide: at the exact posterior log w is constant in z and the path part vanishes while
the score part does not.

- ``stl`` (sticking the landing; Roeder, Wu & Duvenaud 2017) drops the score part of the ELBO:
  log q is re-scored at the sampled z with the guide distribution's parameters detached, so z
  keeps its reparameterized path and phi has no other way in. Unbiased for the ELBO; with the
  exact posterior as guide its gradient is exactly zero on every draw.
- ``dreg`` (doubly reparameterized; Tucker, Lawson, Gu & Maddison 2019) rewrites the score part
  of an importance-weighted bound as a path term. For IWAE the guide's gradient becomes
  sum_k w~_k^2 d log w_k / dz_k dz_k/dphi (w~ the normalized weights, held constant); the model's
  gradient is the standard one, sum_k w~_k d log p(x, z_k) / dtheta, untouched.

How: the log-weights are rebuilt from the same site terms with log q replaced by its re-scored,
parameter-detached copy, so they have the same *values* and gradients only through z and the
model (:func:`path_log_weights`). For ``dreg`` a tensor hook on each sampled z then multiplies the
gradient flowing into it by ``ratio`` = (wanted path coefficient) / (the bound's own coefficient
d bound / d log w_k), which the objective supplies (its ``dreg_ratio(log_w)``):
w~_k for IWAE. Only the gradient that reaches phi through z is scaled; theta's gradient never
passes through z, so the decoder's gradient is exactly the standard one. One backward pass, no
extra model evaluation.

What this needs from a pair (else :class:`ConfigError`, naming the site):
- every local guide latent has ``rsample``, and its distribution can be copied with its parameter
  tensors detached (:func:`detached_distribution`): torch/Pyro distributions, through
  Independent/Masked/Expanded wrappers and parameter-free or tensor-parameter transforms; not
  distributions holding ``nn.Module``s (e.g. a normalizing flow) or undeclared parameters;
- no guide site's parameters depend on another sampled latent (q(z2 | z1), e.g. the 2-layer IWAE
  guide): detaching its parameters would also cut z1's path through them and bias the gradient;
- no ``pyro.factor`` in the guide and no global guide latents (a draw of global weights is shared
  by the minibatch, so its gradient cannot be re-weighted per datapoint).

References:
  Roeder, Wu & Duvenaud (2017), Sticking the Landing: Simple, Lower-Variance Gradient Estimators
  for Variational Inference.
  Tucker, Lawson, Gu & Maddison (2019), Doubly Reparameterized Gradient Estimators for Monte Carlo
  Objectives.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from pyro.distributions.util import is_identically_one, scale_and_mask
from torch.distributions import Distribution, constraints
from torch.distributions.transforms import Transform

from ppvae.errors import ConfigError
from ppvae.traces import PairTrace, Site, reduce_to_particles_by_data

#: name -> what it is, for ``ppvae list`` and error messages
GRAD_ESTIMATORS: dict[str, str] = {
    "reparam": "the reparameterized gradient of the bound as written (path + score terms)",
    "stl": "sticking the landing (Roeder et al. 2017): the score term dropped; for elbo",
    "dreg": "doubly reparameterized (Tucker et al. 2019): the score term rewritten as a path term; for iwae, renyi",
}

# attribute values a distribution or transform may hold besides tensors: nothing to detach in them
_PLAIN = (int, float, bool, str, type(None), torch.Size, torch.dtype, torch.device, weakref.ref, constraints.Constraint)


def check_name(name: str) -> str:
    if name not in GRAD_ESTIMATORS:
        raise ConfigError(f"unknown grad_estimator {name!r}; known: {', '.join(GRAD_ESTIMATORS)}")
    return name


def guide_latents(tr: PairTrace, what: str) -> dict[str, Site]:
    """The local guide latents whose path gradients an estimator rewrites, after refusing the pairs
    it cannot handle (see the module docstring)."""
    glob = [n for n, s in tr.global_guide_sites.items() if not s.is_observed]
    if glob:
        raise ConfigError(
            f"{what}: guide site {glob[0]!r} is a global latent (outside pyro.plate('data')), drawn once per "
            "particle and shared by the minibatch, so its gradient cannot be re-weighted per datapoint; "
            "use grad_estimator 'reparam'"
        )
    factors = [n for n, s in tr.guide_sites.items() if s.is_observed]
    if factors:
        raise ConfigError(
            f"{what}: guide site {factors[0]!r} is a pyro.factor (an observed guide site), which cannot be "
            "re-scored with detached parameters; use grad_estimator 'reparam'"
        )
    latents = dict(tr.guide_sites)
    if not latents:
        raise ConfigError(f"{what}: the guide has no local latent, so there is no guide gradient to rewrite; "
                          "use grad_estimator 'reparam'")
    return latents


def detached_distribution(fn: Any, site: str) -> tuple[Any, list[torch.Tensor]]:
    """A copy of ``fn`` whose parameter tensors are detached, and the original tensors that
    required grad. ``log_prob`` of the copy at a reparameterized z is differentiable through z
    only. Wrappers (Independent, Masked, Expanded, Transformed) are copied recursively; anything
    that could hide parameters from the copy (an ``nn.Module``, an unknown object, a distribution
    class that does not declare ``arg_constraints``) is refused with a ConfigError naming ``site``."""
    params: list[torch.Tensor] = []
    return _detach(fn, site, params, type(fn).__name__, {}), params


def _detach(obj: Any, site: str, params: list, where: str, memo: dict) -> Any:
    if id(obj) in memo:  # shared or cyclic references (a transform and its inverse) are copied once
        return memo[id(obj)]
    if isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            params.append(obj)
            return obj.detach()
        return obj
    if isinstance(obj, torch.nn.Module):  # parameters live in the module, out of a copy's reach
        raise _cannot_rescore(site, f"{where} is a torch.nn.Module ({type(obj).__name__}), e.g. a learned flow")
    if type(obj) in (list, tuple):
        return type(obj)(_detach(v, site, params, f"{where}[{i}]", memo) for i, v in enumerate(obj))
    if isinstance(obj, (Distribution, Transform)):
        if isinstance(obj, Distribution):
            try:
                obj.arg_constraints
            except NotImplementedError:
                raise _cannot_rescore(site, f"{type(obj).__name__} does not declare arg_constraints, so its "
                                            "parameters are unknown") from None
        new = memo[id(obj)] = copy.copy(obj)
        state = dict(vars(obj))
        if isinstance(obj, Transform):
            state["_inv"] = None  # a cached inverse, rebuilt on demand (torch drops it when pickling too)
        # every tensor it holds is detached, lazily cached ones (probs from logits, scale_tril) too
        new.__dict__.update({k: _detach(v, site, params, f"{where}.{k}", memo) for k, v in state.items()})
        return new
    if isinstance(obj, _PLAIN):
        return obj
    raise _cannot_rescore(site, f"{where} holds a {type(obj).__name__}, which ppvae does not know how to detach")


def _cannot_rescore(site: str, why: str) -> ConfigError:
    return ConfigError(
        f"guide site {site!r} cannot be re-scored with detached parameters, which grad_estimator 'stl'/'dreg' "
        f"needs: {why}. Use grad_estimator 'reparam', or a guide distribution with plain tensor parameters "
        "(e.g. dist.Normal(loc, scale).to_event(1))"
    )


def rescored_log_prob(tr: PairTrace, site: Site, detach_params: bool = False, detach_value: bool = False,
                      scaled: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The guide site's (K, B) log-density re-scored with its parameters and/or its value
    detached, masked and (``scaled``) scaled as :class:`ppvae.traces.Site` terms are; and the
    parameter tensors that required grad."""
    fn, params = detached_distribution(site.fn, site.name) if detach_params else (site.fn, [])
    raw = fn.log_prob(site.value.detach() if detach_value else site.value)
    masked = scale_and_mask(raw, 1.0, site.mask)
    if not isinstance(masked, torch.Tensor):  # mask=False: the site contributes nothing
        return torch.zeros_like(site.log_prob), params
    if scaled and not is_identically_one(site.scale):
        masked = masked * site.scale
    lp = reduce_to_particles_by_data(masked, site.name, tr.data_dim, tr.particle_dim, tr.batch_size)
    return lp, params


def guide_path_terms(tr: PairTrace, what: str, scaled: bool = False) -> torch.Tensor:
    """log q(z | x) with every local guide latent re-scored with detached parameters, (K, B): its
    gradient reaches phi through the sampled z alone."""
    total = None
    params_by_site: list[tuple[str, list[torch.Tensor]]] = []
    for name, site in guide_latents(tr, what).items():
        lp, params = rescored_log_prob(tr, site, detach_params=True, scaled=scaled)
        params_by_site.append((name, params))
        total = lp if total is None else total + lp
    _check_independent(tr, params_by_site, what)
    return total


def _check_independent(tr: PairTrace, params_by_site: list, what: str) -> None:
    """Refuse guides in which a site's distribution parameters depend on another sampled latent:
    detaching them would cut that latent's path through them (biased). One autograd query per
    later site, on pairs with several guide latents only."""
    if len(params_by_site) < 2 or not torch.is_grad_enabled():
        return
    earlier: list[tuple[str, torch.Tensor]] = []
    for name, params in params_by_site:
        values = [(n, v) for n, v in earlier if v.requires_grad]
        if params and values:
            grads = torch.autograd.grad(sum(p.sum() for p in params), [v for _, v in values],
                                        retain_graph=True, allow_unused=True)
            used = [n for (n, _), g in zip(values, grads) if g is not None]
            if used:
                raise ConfigError(
                    f"{what}: the parameters of guide site {name!r} depend on the sampled value of {used[0]!r} "
                    f"(a hierarchical guide q({name} | {used[0]}, x)); re-scoring {name!r} with detached "
                    f"parameters would also cut {used[0]!r}'s path through them and bias the gradient. "
                    "Use grad_estimator 'reparam' for this pair"
                )
        earlier.append((name, tr.guide_sites[name].value))


def path_log_weights(tr: PairTrace, what: str, beta: float = 1.0, scaled: bool = False) -> torch.Tensor:
    """log p(x, z) - log q(z | x), (K, B), with the same values as ``tr.log_weights(beta, scaled)``
    but without the score term: log q is the re-scored, parameter-detached copy, so phi's gradient
    comes through z only (STL; DReG with :func:`reweight_path_gradients`)."""
    path = guide_path_terms(tr, what, scaled)
    guide = tr.log_guide_terms(scaled)
    # the value is the trace's own log q bit for bit (path - path is exactly 0); the gradient is path's
    guide = guide.detach() + (path - path.detach())
    latent = tr.log_prior_terms(scaled) - guide
    return tr.log_likelihood_terms(scaled) + (latent if beta == 1.0 else beta * latent)


def reweight_path_gradients(tr: PairTrace, ratio: torch.Tensor) -> None:
    """Multiply the gradient flowing into each local guide latent's sampled value by ``ratio``
    (K, B), broadcast over the value's other batch and event dims. Only the path to phi goes
    through z, so only the guide's gradient changes."""
    ratio = ratio.detach()
    for site in tr.guide_sites.values():
        z = site.value
        if z.requires_grad:
            view = broadcast_to_value(ratio, z, len(site.fn.event_shape), tr)
            z.register_hook(lambda g, view=view: g * view)


def broadcast_to_value(t: torch.Tensor, value: torch.Tensor, event_dim: int, tr: PairTrace) -> torch.Tensor:
    """A (K, B) tensor reshaped to broadcast against a site's value (batch dims, then event dims)."""
    nd = value.dim() - event_dim
    shape = [1] * value.dim()
    k_at, b_at = nd + tr.particle_dim, nd + tr.data_dim
    if t.shape[0] > 1:
        if k_at < 0:
            raise ConfigError(f"a guide value of shape {tuple(value.shape)} has no particle dim to re-weight")
        shape[k_at] = t.shape[0]
    shape[b_at] = t.shape[1]
    return t.reshape(shape)


def sum_to_datapoints(t: torch.Tensor, event_dim: int, tr: PairTrace) -> torch.Tensor:
    """Sum a tensor shaped like a site's value over every dim but the data dim -> (B,)."""
    b_at = t.dim() - event_dim + tr.data_dim
    return t.sum([d for d in range(t.dim()) if d != b_at]).expand(tr.batch_size)
