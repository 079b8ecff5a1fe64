"""Global latents (sites outside the data plate) in every objective and in ``log_likelihood``,
against hand computations and closed forms on a linear-Gaussian model with a Gaussian posterior
over a global weight (the decoder's bias)::

    b   ~ N(0, s_b^2 I_D)                 global: one draw per particle, shared by the minibatch
    z_i ~ N(0, I_d)
    x_i ~ N(W z_i + b, sigma^2 I_D)

    q(b) = N(m, diag v);   q(z_i | x_i) = N(A x_i + c, diag s^2)  (amortized, "diag" guide)
                        or q(z_i | x_i, b) = p(z_i | x_i, b)         (exact conditional, "exact" guide)

Closed forms: p(x_i | b) = N(x_i; b, C) with C = W W^T + sigma^2 I, so the posterior predictive is
E_q(b)[p(x_i | b)] = N(x_i; m, C + diag v); with the exact conditional guide every importance
weight is p(x_i | b_k), so IWAE_1 has expectation E_q(b)[log N(x_i; b, C)] = log N(x_i; m, C) -
tr(C^-1 diag v) / 2 and IWAE_k rises towards the log posterior predictive as k grows.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

import ppvae
import ppvae.likelihood as likelihood_module
from ppvae.errors import ConfigError
from ppvae.traces import trace_pair

D, d, N, B = 4, 2, 40, 8
SIGMA, S_B = 0.7, 1.5
LOG_2PI = math.log(2 * math.pi)


def normal_lp(v, loc, scale):
    return (-0.5 * ((v - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def kl_diag(mq, sq, mp, sp):
    return (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)


class BiasModel(nn.Module):
    def __init__(self, W: torch.Tensor):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("zeros_d", torch.zeros(d))
        self.register_buffer("zeros_D", torch.zeros(D))
        self.b_scale = None  # poutine.scale on the global site, when set

    def forward(self, x, idx=None, size=None):
        with poutine.scale(scale=self.b_scale or 1.0):
            b = pyro.sample("b", dist.Normal(self.zeros_D, S_B + self.zeros_D).to_event(1))  # (K, 1, D) | (D,)
        plate = pyro.plate("data", size, subsample=idx) if idx is not None else pyro.plate("data", x.shape[0])
        with plate:
            z = pyro.sample("z", dist.Normal(self.zeros_d, 1.0 + self.zeros_d).to_event(1))  # (K, B, d)
            loc = z @ self.W.T + b.unsqueeze(-2) if b.dim() == 1 else z @ self.W.T + b
            pyro.sample("x", dist.Normal(loc, SIGMA + 0 * loc).to_event(1), obs=x)

    @torch.no_grad()
    def cov(self) -> torch.Tensor:
        W = self.W.double()
        return W @ W.T + SIGMA**2 * torch.eye(D, dtype=W.dtype)

    @torch.no_grad()
    def conditional_posterior(self, x, b):
        """p(z | x, b) = N(Sigma W^T (x - b) / sigma^2, Sigma)."""
        W = self.W
        cov = torch.linalg.inv(torch.eye(d) + W.T @ W / SIGMA**2)
        return (x - b) @ W @ cov / SIGMA**2, cov


class BiasGuide(nn.Module):
    def __init__(self, model: BiasModel, kind: str = "diag"):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self._model = [model]  # not a submodule
        self.kind = kind
        self.m = nn.Parameter(0.5 * torch.randn(D, generator=g))
        self.log_v = nn.Parameter(torch.log(0.05 + 0.2 * torch.rand(D, generator=g)))
        self.A = nn.Parameter(0.3 * torch.randn(d, D, generator=g))
        self.c = nn.Parameter(0.1 * torch.randn(d, generator=g))
        self.log_s = nn.Parameter(torch.log(0.5 + 0.3 * torch.rand(d, generator=g)))
        self.b_scale = None
        self.last = {}

    @property
    def v(self):
        return self.log_v.exp()

    def forward(self, x, idx=None, size=None):
        with poutine.scale(scale=self.b_scale or 1.0):
            b = pyro.sample("b", dist.Normal(self.m, self.v.sqrt()).to_event(1))
        plate = pyro.plate("data", size, subsample=idx) if idx is not None else pyro.plate("data", x.shape[0])
        with plate:
            if self.kind == "diag":
                loc, scale = x @ self.A.T + self.c, self.log_s.exp().expand(x.shape[0], d)
                z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            else:
                loc, cov = self._model[0].conditional_posterior(x, b)
                scale = torch.linalg.cholesky(cov)
                z = pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=scale))
        self.last = dict(b=b, z=z, loc=loc, scale=scale)


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(D, d, generator=g)
    b_true = 0.8 * torch.randn(D, generator=g)
    x = torch.randn(N, d, generator=g) @ W.T + b_true + SIGMA * torch.randn(N, D, generator=g)
    model = BiasModel(W)
    return model, BiasGuide(model), x


def hand_elbo_loss(model, guide, xb, num_data, beta=1.0, analytic=False):
    """-(N/B sum_b local_b + global) at the guide's recorded draws, mean over particles."""
    r = guide.last
    b, z = r["b"], r["z"]
    bb = b if b.dim() > 1 else b.unsqueeze(0)  # (K, 1, D) | (1, D)
    lik = normal_lp(xb, z @ model.W.T + bb, torch.tensor(SIGMA))  # (K, B)
    if analytic:
        local_latent = -kl_diag(r["loc"], r["scale"], torch.zeros(d), torch.ones(d))
        glob = -kl_diag(guide.m, guide.v.sqrt(), torch.zeros(D), torch.full((D,), S_B))
    else:
        local_latent = normal_lp(z, torch.zeros(d), torch.ones(d)) - normal_lp(z, r["loc"], r["scale"])
        glob = normal_lp(b, torch.zeros(D), torch.full((D,), S_B)) - normal_lp(b, guide.m, guide.v.sqrt())
    local = (lik + beta * local_latent).mean(0) if lik.dim() > 1 else lik + beta * local_latent
    return -(num_data / xb.shape[0] * local.sum() + beta * glob.mean())


# --- 1. the ELBOs under minibatch scaling, on the same random draws --------------------------


@pytest.mark.parametrize("name, analytic", [("elbo", False), ("elbo-analytic", True)])
@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_elbo_is_n_over_b_local_plus_global_once(pair, name, analytic, particles, beta):
    model, guide, x = pair
    xb = x[:B]
    torch.manual_seed(0)
    loss = ppvae.get_objective(name, particles).loss(model, guide, xb, num_data=N, beta=beta)
    expected = hand_elbo_loss(model, guide, xb, N, beta, analytic)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    # the global term is counted once whatever N is: loss(N) = -(N/B L + G) and loss(2N) =
    # -(2N/B L + G) on the same draws, so 2 loss(N) - loss(2N) = -G
    torch.manual_seed(0)
    loss_2n = ppvae.get_objective(name, particles).loss(model, guide, xb, num_data=2 * N, beta=beta)
    if analytic:
        glob = -kl_diag(guide.m, guide.v.sqrt(), torch.zeros(D), torch.full((D,), S_B))
    else:
        b = guide.last["b"]
        glob = (normal_lp(b, torch.zeros(D), torch.full((D,), S_B)) - normal_lp(b, guide.m, guide.v.sqrt())).mean()
    torch.testing.assert_close(2 * loss - loss_2n, -beta * glob.reshape(()), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name, pyro_elbo", [("elbo", pyro.infer.Trace_ELBO), ("elbo-analytic", pyro.infer.TraceMeanField_ELBO)])
@pytest.mark.parametrize("particles", [1, 4])
@pytest.mark.parametrize("b_scale", [None, 0.25])
def test_elbos_equal_pyro_with_a_subsampled_data_plate(pair, name, pyro_elbo, particles, b_scale):
    """Pyro's ELBOs with ``plate("data", N, subsample=idx)`` scale the local sites by N/B and
    leave the global site alone: ppvae must compute the same on the same draws, with a
    poutine.scale on the global site too."""
    model, guide, x = pair
    model.b_scale = guide.b_scale = b_scale
    idx = torch.arange(5, 5 + B)
    xb = x[idx]
    torch.manual_seed(1)
    ours = ppvae.get_objective(name, particles).loss(model, guide, xb, idx, N)
    torch.manual_seed(1)
    ref = pyro_elbo(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    theirs = ref.differentiable_loss(model, guide, xb, idx, N)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    # and the same again with the data plate not subsampled but num_data=N given to the objective
    torch.manual_seed(1)
    ours_nd = ppvae.get_objective(name, particles).loss(model, guide, xb, num_data=N)
    torch.testing.assert_close(ours_nd, theirs, rtol=1e-5, atol=1e-4)


def closed_form_elbo(model, guide, xb, num_data):
    """E[-loss] for the diag guide: N/B sum_b (E log lik_b - KL_z,b) - KL_b, float64."""
    W = model.W.double()
    m, v = guide.m.double(), guide.v.double()
    mz = (xb @ guide.A.T + guide.c).double()
    s2 = (2 * guide.log_s).exp().double()
    resid = ((xb.double() - mz @ W.T - m) ** 2).sum(-1)
    trace = (s2 * (W**2).sum(0)).sum() + v.sum()  # tr(W S W^T) + tr(V)
    lik = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - (resid + trace) / (2 * SIGMA**2)
    kl_z = 0.5 * (s2 + mz**2 - 1 - s2.log()).sum(-1)
    kl_b = kl_diag(m, v.sqrt(), torch.zeros(D, dtype=m.dtype), torch.full((D,), S_B, dtype=m.dtype))
    return num_data / xb.shape[0] * (lik - kl_z).sum() - kl_b


def test_elbo_matches_the_closed_form_in_expectation(pair):
    model, guide, x = pair
    xb = x[:B]
    exact = float(closed_form_elbo(model, guide, xb, N).detach())
    with torch.no_grad():
        torch.manual_seed(0)
        est = [-float(ppvae.get_objective(name, 4000).loss(model, guide, xb, num_data=N)) for name in ("elbo-analytic", "elbo")]
    # standard errors at 4000 particles: ~0.5 (analytic) and ~1 (Monte Carlo) on a value of ~-400
    assert abs(est[0] - exact) < 2.0, (est[0], exact)
    assert abs(est[1] - exact) < 4.0, (est[1], exact)
    # a global term counted per datapoint (N times) would be off by far more than that
    kl_b = float(kl_diag(guide.m, guide.v.sqrt(), torch.zeros(D), torch.full((D,), S_B)))
    assert (N - 1) * kl_b > 40


# --- 2. IWAE and log_likelihood: the posterior predictive -----------------------------------


def log_predictive(model, guide, x):
    """log E_q(b)[p(x | b)] = log N(x; m, C + diag v), float64."""
    cov = model.cov() + torch.diag(guide.v.double().detach())
    return dist.MultivariateNormal(guide.m.double().detach(), covariance_matrix=cov).log_prob(x.double())


def expected_log_lik_given_b(model, guide, x):
    """E_q(b)[log N(x; b, C)] = log N(x; m, C) - tr(C^-1 diag v) / 2, float64."""
    C = model.cov()
    base = dist.MultivariateNormal(guide.m.double().detach(), covariance_matrix=C).log_prob(x.double())
    return base - 0.5 * (torch.linalg.inv(C).diagonal() * guide.v.double().detach()).sum()


def test_log_likelihood_estimates_the_posterior_predictive(pair):
    model, _, x = pair
    exact_guide = BiasGuide(model, "exact")
    # q(b) where a trained posterior would put it (at the data's mean), wide enough that the
    # posterior predictive differs clearly from log p(x | b = m)
    with torch.no_grad():
        exact_guide.m.copy_(x.mean(0))
        exact_guide.log_v.fill_(math.log(0.3))
    torch.manual_seed(0)
    est = ppvae.log_likelihood(model, exact_guide, x, num_samples=5000).double()
    exact = log_predictive(model, exact_guide, x)
    assert (est - exact).abs().max() < 0.05, (est - exact).abs().max()
    # what it must not be: the model at the mean weight, or the prior predictive
    at_mean = dist.MultivariateNormal(exact_guide.m.double().detach(), covariance_matrix=model.cov()).log_prob(x.double())
    prior_pred = dist.MultivariateNormal(torch.zeros(D, dtype=torch.float64), covariance_matrix=model.cov() + S_B**2 * torch.eye(D, dtype=torch.float64)).log_prob(x.double())
    assert (at_mean - exact).abs().mean() > 0.2 and (prior_pred - exact).abs().mean() > 0.2
    # an amortized diagonal guide for z, and the same q(b): close, too (a worse local proposal)
    diag_guide = BiasGuide(model, "diag")
    with torch.no_grad():
        diag_guide.log_v.copy_(exact_guide.log_v)
        diag_guide.m.copy_(exact_guide.m)
        W = model.W
        cov = torch.linalg.inv(torch.eye(d) + W.T @ W / SIGMA**2)
        diag_guide.A.copy_((cov @ W.T / SIGMA**2))
        diag_guide.c.copy_(-(cov @ W.T / SIGMA**2) @ diag_guide.m)
        diag_guide.log_s.copy_(cov.diagonal().sqrt().log() + 0.2)
    est = ppvae.log_likelihood(model, diag_guide, x, num_samples=5000).double()
    # q(z | x) ignores b, a worse proposal: the usual small downward bias of importance sampling
    assert (est - exact).abs().max() < 0.3 and float((est - exact).mean()) > -0.15


def test_iwae_with_global_latents_rises_to_the_posterior_predictive(pair):
    model, _, x = pair
    guide = BiasGuide(model, "exact")
    with torch.no_grad():
        guide.m.copy_(x.mean(0))
        guide.log_v.fill_(math.log(0.3))
    torch.manual_seed(0)

    def reps(name, k, n):
        with torch.no_grad():
            v = torch.stack([ppvae.get_objective(name, k).bound(model, guide, x) for _ in range(n)]).double()
        return v.mean(0), v.std(0) / math.sqrt(n)  # per datapoint: mean and its standard error

    lower = expected_log_lik_given_b(model, guide, x)
    upper = log_predictive(model, guide, x)
    assert (upper - lower).min() > 0.1  # the two ends are apart
    iwae1, se1 = reps("iwae", 1, 2000)
    assert ((iwae1 - lower).abs() < 4 * se1 + 1e-3).all()  # E[IWAE_1] in closed form
    means = {1: iwae1}
    for k in (4, 64, 2000):
        means[k], se = reps("iwae", k, 30)
        assert (means[k] < upper + 4 * se + 1e-3).all()  # a bound on the log posterior predictive
    order = [float(means[k].mean()) for k in (1, 4, 64, 2000)]
    assert order == sorted(order)  # tightens with k
    assert float((upper - means[2000]).mean()) < 0.01 and float((upper - means[2000]).mean()) > -0.005
    # the ELBO's bound with 1 particle is IWAE_1 in expectation
    elbo, se = reps("elbo", 1, 2000)
    assert ((elbo - lower).abs() < 4 * se + 1e-3).all()


def test_iwae_loss_is_n_over_b_local_bounds_plus_the_analytic_kl_once(pair):
    model, guide, x = pair
    xb = x[:B]
    k = 5
    torch.manual_seed(4)
    loss = ppvae.get_objective("iwae", k).loss(model, guide, xb, num_data=N)
    r = guide.last
    lik = normal_lp(xb, r["z"] @ model.W.T + r["b"], torch.tensor(SIGMA))
    log_w = lik + normal_lp(r["z"], torch.zeros(d), torch.ones(d)) - normal_lp(r["z"], r["loc"], r["scale"])  # (k, B)
    local = torch.logsumexp(log_w, 0) - math.log(k)
    kl_b = kl_diag(guide.m, guide.v.sqrt(), torch.zeros(D), torch.full((D,), S_B))
    torch.testing.assert_close(loss, -(N / B * local.sum() - kl_b), rtol=1e-5, atol=1e-4)
    assert r["b"].shape == (k, 1, D)  # one weight draw per particle, shared by the minibatch


def test_log_likelihood_caps_the_global_draws_per_trace(pair, monkeypatch):
    model, guide, x = pair
    calls = []
    real = likelihood_module.trace_pair

    def spy(*args, **kwargs):
        tr = real(*args, **kwargs)
        calls.append((kwargs["num_particles"], tr.batch_size))
        return tr

    monkeypatch.setattr(likelihood_module, "trace_pair", spy)
    monkeypatch.setattr(likelihood_module, "GLOBAL_ELEMENTS", 3 * D)  # room for 3 draws of b per trace
    ppvae.log_likelihood(model, guide, x, num_samples=10, chunk_elements=60)
    assert max(k for k, _ in calls) == 3 and min(b for _, b in calls) > 1  # few draws, shared
    assert sum(k for k, b in calls if b == calls[0][1]) >= 10


# --- 3. structure: the global sites in the trace, errors --------------------------------------


def test_trace_keeps_global_sites_apart(pair):
    model, guide, x = pair
    tr = trace_pair(model, guide, x[:B], num_particles=3)
    assert set(tr.global_model_sites) == set(tr.global_guide_sites) == {"b"}
    assert set(tr.model_sites) == {"z", "x"} and set(tr.guide_sites) == {"z"}
    assert tr.global_guide_sites["b"].log_prob.shape == (3,) and tr.log_weights().shape == (3, B)
    assert tr.has_globals and tr.model_order == ["b", "z", "x"] and tr.guide_order == ["b", "z"]


def test_global_site_missing_from_the_guide_is_an_error(pair):
    model, _, x = pair

    def guide_without_b(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(d), x.new_ones(d)).to_event(1))

    with pytest.raises(ConfigError, match=r"\['b'\] but the guide does not"):
        ppvae.get_objective("elbo").loss(model, guide_without_b, x)


def test_global_site_with_undeclared_batch_dims_is_an_error():
    def model(x):
        w = pyro.sample("w", dist.Normal(x.new_zeros(3, 2), 1.0))  # forgot .to_event(2)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(w.sum() + x.new_zeros(x.shape[-1]), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("w", dist.Normal(x.new_zeros(3, 2), 1.0))

    with pytest.raises(ConfigError, match="to_event"):
        ppvae.get_objective("elbo").loss(model, guide, torch.randn(5, 4))


def test_a_user_bayesian_pair_trains_and_both_moments_of_q_move(pair):
    model, guide, x = pair
    before = {n: p.detach().clone() for n, p in guide.named_parameters()}
    result = ppvae.fit(model, guide, x, epochs=30, batch_size=10, lr=0.05, progress=False, objective="elbo-analytic")
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    for name in ("m", "log_v", "A", "c", "log_s"):
        assert not torch.equal(before[name], getattr(guide, name).detach()), name
