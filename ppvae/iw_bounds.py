"""The importance-weighted family beyond IWAE: ``renyi``, ``miwae``, ``ciwae`` and ``piwae``.

Each is a function of one datapoint's unscaled log-weights log w_k = log p(x, z_k) - log q(z_k | x),
k = 1..K, computed per datapoint and only then multiplied by the datapoint's scale (N / B under
minibatching, or a ``poutine.scale`` shared by all its sites): the same handling as ``iwae``
(:class:`ppvae.objectives.ImportanceWeighted`), not Pyro's ``RenyiELBO``, which tempers the weights
by the minibatch scale inside the logsumexp (DESIGN fact 2). Global latents and their KL are
handled as for ``iwae``.

Options are keyword arguments of the constructors (``Renyi(5, alpha=0.5)``), ``get_objective``'s
keywords, ``TrainConfig.objective_options`` and ``--objective-option KEY=VALUE`` on the CLI.

References:
  Li & Turner (2016), Renyi Divergence Variational Inference.
  Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh (2018), Tighter Variational Bounds are Not
  Necessarily Better.
  Tucker, Lawson, Gu & Maddison (2019), Doubly Reparameterized Gradient Estimators for Monte Carlo
  Objectives.
  Daudel, Benton, Shi & Doucet (2023), Alpha-divergence Variational Inference Meets Importance
  Weighted Auto-Encoders: Methodology and Asymptotics.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from ppvae.errors import ConfigError
from ppvae.grad_estimators import guide_latents, guide_path_terms, rescored_log_prob, sum_to_datapoints
from ppvae.objectives import ImportanceWeighted
from ppvae.traces import PairTrace


def _number(name: str, value: Any, ok, what: str) -> float:
    """``value`` as a float, or a ConfigError saying what the option must be."""
    good = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and ok(value)
    if not good:
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return float(value)


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k over dim 0."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def miwae_bound(log_w: torch.Tensor, groups: int) -> torch.Tensor:
    """(1/M) sum_m log (1/K) sum_k w_mk: the K = k/M particles of each group form one IWAE bound.
    The particles are exchangeable draws, so consecutive blocks of K make the groups."""
    grouped = log_w.reshape(groups, log_w.shape[0] // groups, *log_w.shape[1:])  # (M, K, B)
    return (torch.logsumexp(grouped, 1) - math.log(grouped.shape[1])).mean(0)


class Renyi(ImportanceWeighted):
    """The variational Renyi bound with k particles (Li & Turner 2016, section 4), per datapoint::

        L_alpha = 1 / (1 - alpha) * log (1/k) sum_k w_k^(1 - alpha),      w_k = p(x, z_k) / q(z_k | x)

    ``alpha = 0`` is the IWAE bound; ``alpha -> 1`` is the ELBO, mean_k log w_k, which
    ``alpha = 1`` computes exactly. L_alpha is the log of the power mean of order 1 - alpha of the
    weights, so on the same draws it decreases as alpha grows and ELBO <= L_alpha <= IWAE for alpha
    in [0, 1]; for alpha > 1 it stays a lower bound on log p(x) (looser than the ELBO). alpha < 0 is
    refused: the estimate then exceeds the IWAE estimate and bounds nothing from below. In float32
    the value loses about 1e-7 / (1 - alpha) relative precision as alpha approaches 1.

    ``grad_estimator="dreg"``: d L / d log w_k = v_k = softmax((1 - alpha) log w)_k; applying
    E_q[f(z) d log q(z)/dphi] = E[df/dz dz/dphi] to the score term's f = v_k (Tucker et al. 2019,
    section 3), as d v_k / d log w_k = (1 - alpha) v_k (1 - v_k), turns the guide's gradient into
    sum_k (alpha v_k + (1 - alpha) v_k^2) d log w_k / dz_k dz_k/dphi: Tucker's w~_k^2 at alpha = 0,
    sticking the landing at alpha = 1 (Daudel et al. 2023 study this estimator for this bound).
    """

    name = "renyi"
    summary = "variational Renyi bound 1/(1-alpha) log 1/k sum_k w_k^(1-alpha) (Li & Turner 2016)"
    grad_estimators = ("reparam", "dreg")
    estimator_advice = {"stl": "dropping the score term biases the Renyi bound for alpha < 1; use 'dreg'"}

    def __init__(self, num_particles: int = 1, *, alpha: float = 0.5, grad_estimator: str = "reparam"):
        self.alpha = _number(f"objective {self.name!r}: alpha", alpha, lambda a: a >= 0,
                             "a number >= 0 (0: the IWAE bound, 1: the ELBO; alpha < 0 gives no lower bound)")
        super().__init__(num_particles, grad_estimator)

    def options(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def from_log_weights(self, log_w: torch.Tensor) -> torch.Tensor:
        if self.alpha == 1.0:  # the limit, exactly: the ELBO
            return log_w.mean(0)
        s = 1.0 - self.alpha
        return (torch.logsumexp(s * log_w, 0) - math.log(log_w.shape[0])) / s

    def dreg_ratio(self, log_w: torch.Tensor) -> torch.Tensor:
        # (alpha v + (1 - alpha) v^2) / v, with v the bound's own coefficient (class docstring)
        return self.alpha + (1.0 - self.alpha) * torch.softmax((1.0 - self.alpha) * log_w, 0)


class Grouped(ImportanceWeighted):
    """Base of the bounds that split each datapoint's ``num_particles`` = M * K draws into M =
    ``groups`` groups of K (consecutive blocks: the draws are exchangeable)."""

    def __init__(self, num_particles: int = 1, *, groups: int = 1, grad_estimator: str = "reparam"):
        if isinstance(groups, bool) or not isinstance(groups, numbers.Real) or int(groups) != groups or groups < 1:
            raise ConfigError(f"objective {self.name!r}: groups must be a positive integer (M, the number of "
                              f"groups), got {groups!r}")
        self.groups = int(groups)
        super().__init__(num_particles, grad_estimator)

    def validate(self) -> None:
        k, m = self.num_particles, self.groups
        if k % m:
            raise ConfigError(
                f"objective {self.name!r}: num_particles (k={k}) must be M * K, a multiple of groups (M={m}); "
                f"e.g. k={m * -(-k // m)} for {m} groups of {-(-k // m)}, or groups dividing {k}"
            )

    def options(self) -> dict[str, Any]:
        return {"groups": self.groups}


class MIWAE(Grouped):
    """The multiply importance-weighted bound (Rainforth et al. 2018, section 5): ``num_particles`` =
    M * K draws per datapoint split into M = ``groups`` groups of K, the mean over groups of the
    IWAE-K bound::

        L_MIWAE = 1/M sum_m log 1/K sum_k w_mk

    M = 1 is IWAE-k; K = 1 (groups = num_particles) the ELBO with k samples. A looser bound than
    IWAE-(MK), but its guide gradient has a signal-to-noise ratio that grows with M rather than
    shrinking with K (the paper's point).
    """

    name = "miwae"
    summary = "mean over M = groups groups of the IWAE-K bound, k = M * K (Rainforth et al. 2018)"

    def from_log_weights(self, log_w: torch.Tensor) -> torch.Tensor:
        return miwae_bound(log_w, self.groups)


class CIWAE(ImportanceWeighted):
    """The combination bound (Rainforth et al. 2018, section 5): on the same k draws, a convex mix of
    the ELBO and the IWAE bound::

        L_CIWAE = beta * 1/k sum_k log w_k + (1 - beta) * log 1/k sum_k w_k,       beta in [0, 1]

    beta = 0 is IWAE, beta = 1 the ELBO. (``beta`` is the paper's name; unrelated to KL warm-up.)
    """

    name = "ciwae"
    summary = "beta * ELBO + (1 - beta) * IWAE on the same k draws (Rainforth et al. 2018)"

    def __init__(self, num_particles: int = 1, *, beta: float = 0.5, grad_estimator: str = "reparam"):
        self.beta = _number(f"objective {self.name!r}: beta", beta, lambda b: 0 <= b <= 1,
                            "a number in [0, 1] (the ELBO's weight: 0 is IWAE, 1 the ELBO)")
        super().__init__(num_particles, grad_estimator)

    def options(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def from_log_weights(self, log_w: torch.Tensor) -> torch.Tensor:
        return self.beta * log_w.mean(0) + (1.0 - self.beta) * iwae_bound(log_w)


class PIWAE(Grouped):
    """The partially importance-weighted autoencoder (Rainforth et al. 2018, section 5): one set of
    ``num_particles`` = M * K draws per datapoint, the **model** (theta) trained on the IWAE bound
    of all M * K draws and the **guide** (phi) on the MIWAE bound of M = ``groups`` groups of K
    (the paper's "IWAE target for theta, MIWAE target for phi, using the same samples"). Two targets,
    not one bound: the value reported (and validated on) is the IWAE-(MK) bound, what theta climbs.

    How each parameter set gets its own gradient, in one loss: for a datapoint, with
    M = log p(x, z) (model terms) and G = log q(z | x) (K, B)::

        S = IWAE(M - sg(G))                         theta: IWAE's; z: IWAE's model part
          + <sg(d), z>                              d = dMIWAE(M - G~)/dz - dIWAE(M - sg(G))/dz
          - sum_k sg(a_k) G(sg(z))                  a_k = dMIWAE/dlog w_k, phi's score part

    (sg: stop-gradient; G~: log q re-scored with detached parameters, differentiable in z only;
    d from one ``torch.autograd.grad`` over the sampled z). The last two terms are zero-valued, so
    S equals the IWAE bound; theta enters M only, where only the first term lets it through; phi
    enters through z (gradient: IWAE's model part + d = MIWAE's whole path gradient) and through
    G's parameters (MIWAE's score term). The cost is one extra backward pass through the model per
    step. It needs the same of the guide as ``dreg`` (:mod:`ppvae.grad_estimators`): no
    hierarchical guide, no guide factor or global latent. Parameters the model uses directly
    (e.g. a VampPrior's encoder applied to its pseudo-inputs) get the IWAE gradient on that path.
    groups = 1 is IWAE.
    """

    name = "piwae"
    summary = "model on IWAE-k, guide on MIWAE(groups) of the same k draws (Rainforth et al. 2018)"

    def from_log_weights(self, log_w: torch.Tensor) -> torch.Tensor:
        return iwae_bound(log_w)

    def per_datapoint(self, tr: PairTrace, beta: float = 1.0) -> torch.Tensor:
        if self.groups == 1 or not torch.is_grad_enabled():
            return super().per_datapoint(tr, beta)  # IWAE, or a value without gradients
        weight = tr.datapoint_scale(f"objective {self.name!r}")
        bound = self._split_gradient_bound(tr, beta)
        return bound if isinstance(weight, float) and weight == 1.0 else weight * bound

    def _split_gradient_bound(self, tr: PairTrace, beta: float) -> torch.Tensor:
        what = f"objective {self.name!r}"
        latents = guide_latents(tr, what)
        model = tr.log_prior_terms()
        model = tr.log_likelihood_terms() + (model if beta == 1.0 else beta * model)  # (K, B), theta and z
        guide = tr.log_guide_terms()
        iw = iwae_bound(model - (guide.detach() if beta == 1.0 else beta * guide.detach()))
        path = guide_path_terms(tr, what)  # log q, differentiable in z only
        log_w_path = model - (path if beta == 1.0 else beta * path)
        mi = miwae_bound(log_w_path, self.groups)
        sites = [s for s in latents.values() if s.value.requires_grad]  # the z phi reaches
        if not sites:  # a guide without trainable parameters: theta's IWAE gradient is all there is
            return iw
        d = torch.autograd.grad((mi - iw).sum(), [s.value for s in sites], retain_graph=True, allow_unused=True)
        extra = iw.new_zeros(iw.shape)
        for site, dz in zip(sites, d):
            z = site.value
            if dz is not None:
                extra = extra + sum_to_datapoints(dz.detach() * z, len(site.fn.event_shape), tr)
        # MIWAE's coefficients on each log w_k: its gradient, held constant
        lw = log_w_path.detach().requires_grad_()
        with torch.enable_grad():
            (a,) = torch.autograd.grad(miwae_bound(lw, self.groups).sum(), lw)
        for site in latents.values():
            score, _ = rescored_log_prob(tr, site, detach_value=True)  # phi's score path only
            extra = extra - (a * (score if beta == 1.0 else beta * score)).sum(0)
        return iw + (extra - extra.detach())
