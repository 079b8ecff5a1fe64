"""Pyro handlers inside a user's pair: masks, scales and guide ``pyro.factor`` sites (issue 8).

Each handler is checked against what Pyro's own ``Trace_ELBO`` / ``TraceMeanField_ELBO`` compute
on the same random draws (the seed is reset before each; ppvae's structure probe runs under
``fork_rng``), with and without minibatch scaling. Where a handler has no clean meaning for an
objective (a scale on some sites only, inside an importance-weighted bound or log p(x)) ppvae
refuses with a ``ConfigError`` naming the site. The last section covers the fallback to Pyro's
estimator for pairs without ``rsample`` (discrete latents), whose N / B must follow every batch.
"""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

import ppvae
from ppvae.errors import ConfigError
from ppvae.traces import _PROBES

D, Z, B = 5, 2, 8
EVEN = torch.arange(B) % 2 == 0  # a per-datapoint mask: half the batch


# --- a small Gaussian pair with switchable handlers -------------------------------------------


@dataclass
class Handlers:
    """Which handlers the pair applies; tensors are per datapoint (B,) or per dimension (B, D)."""

    x_mask: torch.Tensor | None = None  # poutine.mask on "x"
    x_dims_mask: torch.Tensor | None = None  # Normal(...).mask(m).to_event(1): a partial mask of x's dims
    obs_mask: torch.Tensor | None = None  # pyro.sample(..., obs_mask=m): imputes unobserved rows
    x_scale: float | torch.Tensor = 1.0  # poutine.scale on "x" only
    z_scale: float | torch.Tensor = 1.0  # poutine.scale on "z", in model and guide
    z_mask: torch.Tensor | None = None  # poutine.mask on "z", in model and guide
    model_z_mask: torch.Tensor | None = None  # poutine.mask on the model's "z" only
    guide_factor: bool = False  # pyro.factor in the guide (a reparameterized correction to log q)
    everything_scale: float | torch.Tensor = 1.0  # poutine.scale around model and guide alike
    subsample: tuple[torch.Tensor, int] | None = None  # pyro.plate("data", N, subsample=idx)


class GaussianPair(nn.Module):
    """z ~ N(0, I_2); x ~ N(dec(z), 0.7^2 I_5), q(z | x) = N(enc(x)), with ``Handlers`` applied."""

    def __init__(self, h: Handlers):
        super().__init__()
        self.h = h
        self.dec = nn.Linear(Z, D)
        self.enc = nn.Linear(D, 2 * Z)
        self.imp = nn.Linear(D, D)  # the guide's imputation of obs_mask'ed rows

    def plate(self, x):
        if self.h.subsample is not None:
            idx, n = self.h.subsample
            return pyro.plate("data", n, subsample=idx)
        return pyro.plate("data", x.shape[0])

    def model(self, x):
        h = self.h
        with poutine.scale(scale=h.everything_scale), self.plate(x):
            z_mask = h.z_mask if h.model_z_mask is None else h.model_z_mask
            with poutine.scale(scale=h.z_scale), poutine.mask(mask=True if z_mask is None else z_mask):
                z = pyro.sample("z", dist.Normal(x.new_zeros(Z), x.new_ones(Z)).to_event(1))
            lik = dist.Normal(self.dec(z), 0.7 * x.new_ones(D))
            if h.x_dims_mask is not None:
                lik = lik.mask(h.x_dims_mask)
            with poutine.scale(scale=h.x_scale), poutine.mask(mask=True if h.x_mask is None else h.x_mask):
                pyro.sample("x", lik.to_event(1), obs=x, obs_mask=h.obs_mask)

    def guide(self, x):
        h = self.h
        loc, raw = self.enc(x).chunk(2, -1)
        with poutine.scale(scale=h.everything_scale), self.plate(x):
            with poutine.scale(scale=h.z_scale), poutine.mask(mask=True if h.z_mask is None else h.z_mask):
                z = pyro.sample("z", dist.Normal(loc, F.softplus(raw)).to_event(1))
            if h.guide_factor:  # e.g. a log-Jacobian: depends on the sample, reparameterized
                pyro.factor("log_jacobian", 0.3 * z.sum(-1) - 0.1 * (z**2).sum(-1), has_rsample=True)
            if h.obs_mask is not None:
                with poutine.mask(mask=~h.obs_mask):
                    pyro.sample("x_unobserved", dist.Normal(self.imp(x), x.new_ones(D)).to_event(1))


def make(h: Handlers) -> tuple[GaussianPair, torch.Tensor]:
    torch.manual_seed(0)
    pair = GaussianPair(h)
    return pair, torch.randn(B, D)


CASES = {
    "mask_x": Handlers(x_mask=EVEN),
    "mask_x_dims": Handlers(x_dims_mask=torch.rand(B, D, generator=torch.Generator().manual_seed(1)) < 0.6),
    "obs_mask": Handlers(obs_mask=EVEN),
    "scale_x": Handlers(x_scale=0.3),
    "scale_x_per_datapoint": Handlers(x_scale=torch.linspace(0.5, 2.0, B)),
    "scale_z": Handlers(z_scale=torch.linspace(2.0, 0.25, B)),
    "mask_z": Handlers(z_mask=~EVEN),
    "guide_factor": Handlers(guide_factor=True),
}


def pyro_loss(elbo_cls, pair, x, particles, factor=None):
    """Pyro's differentiable loss, with ``poutine.scale(factor)`` around both for minibatches."""
    model, guide = pair.model, pair.guide
    if factor is not None:
        model, guide = poutine.scale(model, factor), poutine.scale(guide, factor)
    elbo = elbo_cls(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    return elbo.differentiable_loss(model, guide, x)


# --- 1. the ELBOs equal Pyro's, handler by handler --------------------------------------------


@pytest.mark.parametrize("num_data", [None, 40])
@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("name, elbo_cls", [("elbo", pyro.infer.Trace_ELBO), ("elbo-analytic", pyro.infer.TraceMeanField_ELBO)])
@pytest.mark.parametrize("case", list(CASES))
def test_elbos_equal_pyro_under_handlers(case, name, elbo_cls, particles, num_data):
    pair, x = make(CASES[case])
    params = list(pair.parameters())
    torch.manual_seed(9)
    ours = ppvae.get_objective(name, particles).loss(pair.model, pair.guide, x, num_data=num_data)
    g_ours = torch.autograd.grad(ours, params, allow_unused=True)
    torch.manual_seed(9)
    theirs = pyro_loss(elbo_cls, pair, x, particles, None if num_data is None else num_data / B)
    g_theirs = torch.autograd.grad(theirs, params, allow_unused=True)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(g_ours, g_theirs):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)


def test_handlers_change_the_loss():
    """The comparisons above are not vacuous: every handler moves the loss away from the plain pair's."""
    plain, x = make(Handlers())
    torch.manual_seed(9)
    base = ppvae.get_objective("elbo").loss(plain.model, plain.guide, x)
    for case, h in CASES.items():
        pair, _ = make(h)
        torch.manual_seed(9)
        got = ppvae.get_objective("elbo").loss(pair.model, pair.guide, x)
        assert abs(got.item() - base.item()) > 1e-2, case


def test_mask_example_of_issue_8():
    """poutine.mask on "x" in a Bernoulli VAE: ppvae used to ignore it (41.10 vs Pyro's 24.77)."""
    torch.manual_seed(0)
    dec, enc = nn.Linear(Z, 6), nn.Linear(6, 2 * Z)
    x = (torch.rand(B, 6) < 0.4).float()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z), x.new_ones(Z)).to_event(1))
            with poutine.mask(mask=EVEN):
                pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        loc, raw = enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, F.softplus(raw)).to_event(1))

    torch.manual_seed(1)
    ours = ppvae.get_objective("elbo").loss(model, guide, x)
    torch.manual_seed(1)
    theirs = pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert theirs.item() == pytest.approx(24.765, abs=1e-3)


@pytest.mark.parametrize("name, elbo_cls", [("elbo", pyro.infer.Trace_ELBO), ("elbo-analytic", pyro.infer.TraceMeanField_ELBO)])
def test_subsampled_plate_with_a_site_scale_is_scaled_once(name, elbo_cls):
    """A user-subsampled data plate (N / B in every site's scale) plus poutine.scale on "x": the
    data plate's N / B is applied once, the site's own 0.3 on top, num_data=N or not."""
    n = 40
    pair, x = make(Handlers(x_scale=0.3, subsample=(torch.arange(3, 3 + B), n)))
    torch.manual_seed(5)
    theirs = pyro_loss(elbo_cls, pair, x, 1)
    for num_data in (None, n):
        torch.manual_seed(5)
        ours = ppvae.get_objective(name).loss(pair.model, pair.guide, x, num_data=num_data)
        torch.testing.assert_close(ours, theirs)


def test_analytic_kl_keeps_monte_carlo_where_model_and_guide_masks_differ():
    """A mask on the model's z only: E_q[log q - m log p] is not m * KL(q || p), so elbo-analytic
    keeps the Monte Carlo term for z (equal to 'elbo' on the same draws). TraceMeanField_ELBO
    applies the guide's (absent) mask to the KL and gets another number."""
    pair, x = make(Handlers(model_z_mask=EVEN))
    torch.manual_seed(3)
    analytic = ppvae.get_objective("elbo-analytic").loss(pair.model, pair.guide, x)
    torch.manual_seed(3)
    mc = ppvae.get_objective("elbo").loss(pair.model, pair.guide, x)
    torch.manual_seed(3)
    trace_elbo = pyro_loss(pyro.infer.Trace_ELBO, pair, x, 1)
    torch.manual_seed(3)
    mean_field = pyro_loss(pyro.infer.TraceMeanField_ELBO, pair, x, 1)
    torch.testing.assert_close(analytic, mc)
    torch.testing.assert_close(mc, trace_elbo)
    assert abs(analytic.item() - mean_field.item()) > 1e-2


def test_elbo_honours_a_scale_that_varies_across_particles():
    """Trace_ELBO sums scale * log p per particle; so does 'elbo' (the mean over particles
    of the scaled terms): a scale computed from a sampled z is fine in an ELBO."""

    class SampleScaled(GaussianPair):
        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(Z), x.new_ones(Z)).to_event(1))
                with poutine.scale(scale=torch.sigmoid(z.sum(-1)).detach() + 0.5):
                    pyro.sample("x", dist.Normal(self.dec(z), 0.7 * x.new_ones(D)).to_event(1), obs=x)

    torch.manual_seed(0)
    pair, x = SampleScaled(Handlers()), torch.randn(B, D)
    torch.manual_seed(4)
    ours = ppvae.get_objective("elbo", 3).loss(pair.model, pair.guide, x)
    torch.manual_seed(4)
    torch.testing.assert_close(ours, pyro_loss(pyro.infer.Trace_ELBO, pair, x, 3))
    with pytest.raises(ConfigError, match="model site 'x'"):
        ppvae.get_objective("iwae", 3).loss(pair.model, pair.guide, x)


def test_guide_factor_with_has_rsample_false_takes_pyros_score_function_estimator():
    """A guide factor with has_rsample=False is a score-function term for Pyro, so 'elbo' hands the
    pair to Trace_ELBO and the other objectives refuse, naming it."""
    plain, x = make(Handlers())

    def guide(x):
        loc, raw = plain.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, F.softplus(raw)).to_event(1))
            pyro.factor("log_jacobian", 0.3 * z.sum(-1), has_rsample=False)

    torch.manual_seed(4)
    ours = ppvae.get_objective("elbo").loss(plain.model, guide, x, num_data=40)
    torch.manual_seed(4)
    theirs = pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(
        poutine.scale(plain.model, 40 / B), poutine.scale(guide, 40 / B), x
    )
    torch.testing.assert_close(ours, theirs)
    for name in ("elbo-analytic", "iwae"):
        with pytest.raises(ConfigError, match="log_jacobian.*has_rsample=True"):
            ppvae.get_objective(name).loss(plain.model, guide, x)


# --- 2. the importance-weighted bound and log p(x) --------------------------------------------


@pytest.mark.parametrize("case", ["mask_x", "mask_x_dims", "obs_mask", "mask_z", "guide_factor"])
def test_iwae_honours_masks_and_guide_factors(case):
    """Unscaled, RenyiELBO(alpha=0) is the IWAE bound (DESIGN fact 2) and honours masks and guide
    factors as Trace_ELBO does: ppvae's iwae equals it on the same draws."""
    pair, x = make(CASES[case])
    k = 4
    torch.manual_seed(6)
    ours = ppvae.get_objective("iwae", k).loss(pair.model, pair.guide, x)
    torch.manual_seed(6)
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    assert ours.item() == pytest.approx(renyi.loss(pair.model, pair.guide, x), rel=1e-6)
    # and iwae with one particle is the ELBO on the same draws, here too
    torch.manual_seed(6)
    one = ppvae.get_objective("iwae", 1).loss(pair.model, pair.guide, x, num_data=40)
    torch.manual_seed(6)
    torch.testing.assert_close(one, pyro_loss(pyro.infer.Trace_ELBO, pair, x, 1, 40 / B))


@pytest.mark.parametrize("weight", [0.25, torch.linspace(0.5, 2.0, B)], ids=["scalar", "per_datapoint"])
def test_iwae_takes_a_scale_shared_by_every_site_as_a_datapoint_weight(weight):
    """poutine.scale around model and guide alike weights each datapoint's bound, applied after
    the logsumexp as the minibatch scale is: (N / B) sum_i w_i IWAE_i."""
    plain, x = make(Handlers())
    weighted, _ = make(Handlers(everything_scale=weight))
    k = 5
    torch.manual_seed(8)
    bound = ppvae.get_objective("iwae", k).bound(plain.model, plain.guide, x)
    torch.manual_seed(8)
    loss = ppvae.get_objective("iwae", k).loss(weighted.model, weighted.guide, x, num_data=40)
    torch.testing.assert_close(loss, -(40 / B) * (weight * bound).sum())


@pytest.mark.parametrize("case, site", [("scale_x", "model site 'x'"), ("scale_x_per_datapoint", "model site 'x'"), ("scale_z", "model site 'x'")])
def test_iwae_and_log_likelihood_refuse_a_scale_on_some_sites(case, site):
    """A scale on some sites tempers the weights: logmeanexp of tempered weights is no bound on
    log p(x) (pyro issue 2220 is the same thing for RenyiELBO), so ppvae says so instead."""
    pair, x = make(CASES[case])
    with pytest.raises(ConfigError, match=f"{site}.*'elbo' or 'elbo-analytic'"):
        ppvae.get_objective("iwae", 3).loss(pair.model, pair.guide, x)
    with pytest.raises(ConfigError, match=f"log_likelihood: {site}"):
        ppvae.log_likelihood(pair.model, pair.guide, x, num_samples=4)


def test_log_likelihood_ignores_a_scale_shared_by_every_site():
    """A datapoint weight does not change the datapoint's density."""
    plain, x = make(Handlers())
    weighted, _ = make(Handlers(everything_scale=torch.linspace(0.5, 2.0, B)))
    torch.manual_seed(2)
    a = ppvae.log_likelihood(plain.model, plain.guide, x, num_samples=50)
    torch.manual_seed(2)
    b = ppvae.log_likelihood(weighted.model, weighted.guide, x, num_samples=50)
    torch.testing.assert_close(a, b)


def test_log_likelihood_marginalizes_masked_dims_of_x(linear_gaussian):
    """Masked dims of x contribute 0: the estimate is log p(x_observed dims). PPCA restricted to
    the first 3 of 5 dims has the closed-form marginal N(b_:3, W_:3 W_:3^T + sigma^2 I), and with
    that sub-model's exact posterior as proposal every weight equals it."""
    lg = linear_gaussian
    keep = torch.tensor([True, True, True, False, False])
    sub = type(lg.model)(lg.model.W[:3].detach(), lg.model.b[:3].detach(), float(lg.model.sigma.detach()))
    sub_guide = lg.exact_guide().__class__(sub)

    def masked_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(lg.model.prior_loc, lg.model.prior_scale).to_event(1))
            loc = z @ lg.model.W.T + lg.model.b
            fn = dist.Normal(loc, lg.model.sigma.expand(loc.shape)).mask(keep)
            pyro.sample("x", fn.to_event(1), obs=x)

    def guide(x):
        sub_guide(x[:, :3])

    exact = sub.marginal().log_prob(lg.x[:, :3].double())
    est = ppvae.log_likelihood(masked_model, guide, lg.x, num_samples=3)
    torch.testing.assert_close(est.double(), exact, atol=1e-4, rtol=0)
    # poutine.mask on whole datapoints: a fully masked x leaves log p(x_i) = log 1 = 0, up to the
    # proposal's Monte Carlo error; with the prior as proposal every weight is exactly 1
    def prior_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(lg.model.prior_loc, lg.model.prior_scale).to_event(1))

    def row_masked_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(lg.model.prior_loc, lg.model.prior_scale).to_event(1))
            loc = z @ lg.model.W.T + lg.model.b
            with poutine.mask(mask=x[:, 0] > 0):
                pyro.sample("x", dist.Normal(loc, lg.model.sigma.expand(loc.shape)).to_event(1), obs=x)

    est = ppvae.log_likelihood(row_masked_model, prior_guide, lg.x, num_samples=3, batch_size=10)
    hidden = lg.x[:, 0] <= 0
    assert hidden.any() and torch.all(est[hidden] == 0) and torch.all(est[~hidden] < 0)


def test_log_likelihood_counts_a_guide_factor_as_part_of_log_q():
    """A guide factor c_i (e.g. a log-Jacobian) belongs to the proposal's density: log w = log p -
    log q - c_i, so the estimate moves by -c_i (same draws)."""
    plain, x = make(Handlers())
    c = torch.linspace(-1.0, 2.0, B)

    def guide_with_factor(x):
        loc, raw = plain.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, F.softplus(raw)).to_event(1))
            pyro.factor("correction", c, has_rsample=True)

    torch.manual_seed(2)
    a = ppvae.log_likelihood(plain.model, plain.guide, x, num_samples=20)
    torch.manual_seed(2)
    b = ppvae.log_likelihood(plain.model, guide_with_factor, x, num_samples=20)
    torch.testing.assert_close(b, a - c)


# --- 3. the Pyro fallback for pairs without rsample -------------------------------------------


class DiscretePair(nn.Module):
    """z ~ Bernoulli(0.5)^3 (no rsample: Pyro's score-function estimator), x ~ N(dec(z), I)."""

    def __init__(self):
        super().__init__()
        self.dec = nn.Linear(3, D)
        self.enc = nn.Linear(D, 3)

    def model(self, x, idx=None, size=None):
        plate = pyro.plate("data", size, subsample=idx) if idx is not None else pyro.plate("data", x.shape[0])
        with plate:
            z = pyro.sample("z", dist.Bernoulli(0.5 * x.new_ones(3)).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), x.new_ones(D)).to_event(1), obs=x)

    def guide(self, x, idx=None, size=None):
        plate = pyro.plate("data", size, subsample=idx) if idx is not None else pyro.plate("data", x.shape[0])
        with plate:
            pyro.sample("z", dist.Bernoulli(logits=self.enc(x)).to_event(1))


def trace_elbo_loss(pair, x, factor, *args):
    model, guide = poutine.scale(pair.model, factor), poutine.scale(pair.guide, factor)
    return pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x, *args)


def test_score_function_fallback_scales_every_batch_by_its_own_n_over_b():
    """An epoch's last batch is smaller: its N / B must be its own (30 / 3), not the first batch's
    (30 / 10), which the fallback used to cache."""
    torch.manual_seed(0)
    pair = DiscretePair()
    data = torch.randn(13, D)
    model, guide = pair.model, pair.guide  # stable callables, as a trainer passes them
    elbo = ppvae.get_objective("elbo")
    torch.manual_seed(7)
    first = elbo.loss(model, guide, data[:10], num_data=30)
    torch.manual_seed(7)
    last = elbo.loss(model, guide, data[10:], num_data=30)
    torch.manual_seed(7)
    torch.testing.assert_close(last, trace_elbo_loss(pair, data[10:], 30 / 3))
    # the first call too: finding that the pair needs Pyro consumes none of the caller's draws
    torch.manual_seed(7)
    torch.testing.assert_close(first, trace_elbo_loss(pair, data[:10], 30 / 10))
    # a subsampled plate already carries N / B: num_data=N adds nothing
    idx = torch.arange(4)
    torch.manual_seed(7)
    ours = elbo.loss(model, guide, data[:4], idx, 30, num_data=30)
    torch.manual_seed(7)
    torch.testing.assert_close(ours, trace_elbo_loss(pair, data[:4], 1.0, idx, 30))


def test_score_function_fallback_cache_holds_no_pair_alive():
    """The "needs Pyro" knowledge is cached weakly on model and guide: an entry dies with its
    guide, so no stale entry can be found again through a recycled id()."""
    torch.manual_seed(0)
    pair = DiscretePair()
    x = torch.randn(4, D)

    def model(x):
        pair.model(x)

    def guide(x):
        pair.guide(x)

    ppvae.get_objective("elbo").loss(model, guide, x, num_data=8)
    assert not _PROBES[model][guide].reparameterized
    with pytest.raises(ConfigError, match=r"guide sites \['z'\]"):
        ppvae.get_objective("iwae", 2).loss(model, guide, x)
    ref = weakref.ref(guide)
    del guide
    gc.collect()
    assert ref() is None and len(_PROBES[model]) == 0
