"""The objectives ``elbo``, ``elbo-analytic`` and ``iwae`` against hand computations, closed forms
and Pyro's own estimators.

Hand computations reuse the random numbers of the objective under test in one of two ways: a guide
that records what it sampled, or re-tracing the guide after resetting the seed (the objectives draw
nothing else, and the structure probe in ``ppvae.traces`` runs under ``fork_rng``).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

import ppvae
from ppvae.errors import ConfigError
from ppvae.guides.vae import GaussianEncoder
from ppvae.models.vae import VAE, VAEConfig

LOG_2PI = math.log(2 * math.pi)


# --- hand-written densities (constants kept) -------------------------------------------------


def normal_lp(v, loc, scale):
    """log N(v; loc, diag scale^2), summed over the last dim."""
    return (-0.5 * ((v - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def std_normal_lp(v):
    return (-0.5 * v**2 - 0.5 * LOG_2PI).sum(-1)


def bernoulli_lp(x, logits):
    """log Bernoulli(x; sigmoid(logits)), summed over the last dim."""
    return (x * logits - F.softplus(logits)).sum(-1)


def kl_diag(mq, sq, mp, sp):
    """KL(N(mq, sq^2) || N(mp, sp^2)) of diagonal Gaussians, summed over the last dim."""
    return (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)


def kl_std_normal(m, s):
    """KL(N(m, s^2) || N(0, I)) = 1/2 sum(m^2 + s^2 - 1 - log s^2)."""
    return 0.5 * (m**2 + s**2 - 1 - 2 * torch.log(s)).sum(-1)


def logmeanexp(t, dim=0):
    return torch.logsumexp(t, dim) - math.log(t.shape[dim])


# --- a tiny Bernoulli pair that records its samples, with optional user-side subsampling -----


class TinyModel(nn.Module):
    """z ~ N(0, I_2); x ~ Bernoulli(logits = dec(z)), with ``pyro.plate("data", N, subsample=idx)``
    when ``idx`` is given."""

    def __init__(self, x_dim=6, z_dim=2):
        super().__init__()
        self.dec = nn.Linear(z_dim, x_dim)
        self.register_buffer("zeros", torch.zeros(z_dim))

    def forward(self, x, idx=None, size=None):
        plate = pyro.plate("data", size, subsample=idx) if idx is not None else pyro.plate("data", x.shape[0])
        with plate:
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0 + self.zeros).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)


class TinyGuide(nn.Module):
    def __init__(self, x_dim=6, z_dim=2):
        super().__init__()
        self.enc = nn.Linear(x_dim, 2 * z_dim)
        self.last = None

    def forward(self, x, idx=None, size=None):
        loc, raw = self.enc(x).chunk(2, -1)
        scale = F.softplus(raw)
        plate = pyro.plate("data", size, subsample=idx) if idx is not None else pyro.plate("data", x.shape[0])
        with plate:
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        self.last = (z, loc, scale)  # what was sampled, for the hand computation


def tiny_log_w(model, guide, x):
    """log p(x, z) - log q(z | x) by hand at the guide's recorded z: shape (K, B)."""
    z, loc, scale = guide.last
    return bernoulli_lp(x, model.dec(z)) + std_normal_lp(z) - normal_lp(z, loc, scale)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    x = (torch.rand(8, 6) < 0.4).float()
    return TinyModel(), TinyGuide(), x


# --- 2. ELBO <= IWAE_k <= log p(x) on probabilistic PCA --------------------------------------


def closed_form_elbo(lg, guide, x):
    """E_q[log p(x, z) - log q(z|x)] for PPCA and a diagonal Gaussian q = N(m, diag s^2)."""
    W, b, s2 = lg.model.W.double(), lg.model.b.double(), lg.model.sigma.double() ** 2
    m = (x @ guide.A.T + guide.c).double()
    s = guide.log_scale.exp().double()
    D = x.shape[1]
    resid = ((x.double() - m @ W.T - b) ** 2).sum(-1)
    trace = (s**2 * (W**2).sum(0)).sum()  # tr(W diag(s^2) W^T)
    lik = -0.5 * D * math.log(2 * math.pi * s2) - (resid + trace) / (2 * s2)
    kl = 0.5 * (s**2 + m**2 - 1 - 2 * s.log()).sum(-1)
    return lik - kl


@torch.no_grad()
def test_elbo_le_iwae_k_le_log_px_and_monotone_in_k(linear_gaussian):
    lg = linear_gaussian
    guide = lg.guide(shift=1.0, scale_factor=0.5)  # deliberately imperfect: off-centre and too narrow
    exact = lg.exact_log_px().mean()
    repeats = 60
    torch.manual_seed(0)
    elbo = torch.stack([ppvae.get_objective("elbo").bound(lg.model, guide, lg.x) for _ in range(repeats)])
    means, ses = {}, {}
    for k in (1, 5, 50, 500):
        obj = ppvae.get_objective("iwae", k)
        vals = torch.stack([obj.bound(lg.model, guide, lg.x) for _ in range(repeats)]).double()  # (R, N)
        per_repeat = vals.mean(1)  # each repeat: an average over the 64 datapoints
        means[k], ses[k] = per_repeat.mean(), per_repeat.std() / math.sqrt(repeats)
    # the Monte Carlo error is far below the gaps being asserted
    assert max(ses.values()) < 0.02
    closed = closed_form_elbo(lg, guide, lg.x).mean()
    elbo_se = elbo.double().mean(1).std() / math.sqrt(repeats)
    assert abs(elbo.double().mean() - closed) < 4 * elbo_se  # the ELBO estimate is unbiased ...
    assert abs(means[1] - closed) < 4 * ses[1]  # ... and so is IWAE_1: the same estimator
    assert closed < means[5] - 0.2
    assert means[5] < means[50] - 0.2
    assert means[50] < means[500] - 0.1
    assert means[500] < exact - 0.2  # still a strict lower bound with this guide


def test_iwae_1_is_the_elbo_on_the_same_samples(linear_gaussian):
    lg = linear_gaussian
    guide = lg.guide(shift=1.0, scale_factor=0.5)
    torch.manual_seed(3)
    a = ppvae.get_objective("iwae", 1).bound(lg.model, guide, lg.x)
    torch.manual_seed(3)
    b = ppvae.get_objective("elbo", 1).bound(lg.model, guide, lg.x)
    torch.testing.assert_close(a, b)


def test_iwae_with_exact_posterior_is_log_px_for_any_k(linear_gaussian):
    lg = linear_gaussian
    for k in (1, 7):
        got = ppvae.get_objective("iwae", k).bound(lg.model, lg.exact_guide(), lg.x)
        torch.testing.assert_close(got.double(), lg.exact_log_px(), atol=1e-4, rtol=0)


# --- 3. the iwae loss under minibatch scaling ------------------------------------------------


def test_iwae_loss_is_n_over_b_times_the_hand_computed_bound(tiny):
    model, guide, x = tiny
    N, B, K = 80, x.shape[0], 5
    loss = ppvae.get_objective("iwae", K).loss(model, guide, x, num_data=N)
    log_w = tiny_log_w(model, guide, x)
    assert log_w.shape == (K, B)
    expected = -(N / B) * logmeanexp(log_w, 0).sum()
    torch.testing.assert_close(loss, expected)
    # the same gradients as the hand-written loss
    params = [*model.parameters(), *guide.parameters()]
    torch.manual_seed(11)
    g_loss = torch.autograd.grad(ppvae.get_objective("iwae", K).loss(model, guide, x, num_data=N), params, retain_graph=True)
    g_hand = torch.autograd.grad(-(N / B) * logmeanexp(tiny_log_w(model, guide, x), 0).sum(), params)
    for a, b in zip(g_loss, g_hand):
        torch.testing.assert_close(a, b)
    # num_data=None: no scaling
    plain = ppvae.get_objective("iwae", K).loss(model, guide, x)
    torch.testing.assert_close(plain, -logmeanexp(tiny_log_w(model, guide, x), 0).sum())


def test_iwae_with_a_subsampled_data_plate_is_not_double_scaled(tiny):
    model, guide, x = tiny
    N, B, K = 80, x.shape[0], 5
    idx = torch.arange(10, 10 + B)
    for num_data in (N, None):  # the plate already says N / B; num_data=N must not apply it again
        loss = ppvae.get_objective("iwae", K).loss(model, guide, x, idx, N, num_data=num_data)
        expected = -(N / B) * logmeanexp(tiny_log_w(model, guide, x), 0).sum()
        torch.testing.assert_close(loss, expected)
    bound = ppvae.get_objective("iwae", K).bound(model, guide, x, idx, N)  # per datapoint, unscaled
    torch.testing.assert_close(bound, logmeanexp(tiny_log_w(model, guide, x), 0))


def test_renyi_alpha0_agrees_unscaled_and_tempers_under_scaling(tiny):
    """pyro.infer.RenyiELBO(alpha=0) puts the subsampling scale inside the logsumexp: it computes
    sum_i logmeanexp_k((N/B) log w_ik), a tempered bound, not (N/B) * IWAE (pyro issue 2220)."""
    model, guide, x = tiny
    N, B, K = 80, x.shape[0], 5
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    torch.manual_seed(4)
    ours = ppvae.get_objective("iwae", K).loss(model, guide, x)
    torch.manual_seed(4)
    theirs = renyi.loss(model, guide, x)
    assert ours.item() == pytest.approx(theirs, rel=1e-6)  # unscaled: the same bound

    idx = torch.arange(B)
    torch.manual_seed(5)
    ours = ppvae.get_objective("iwae", K).loss(model, guide, x, idx, N)
    torch.manual_seed(5)
    theirs = renyi.loss(model, guide, x, idx, N)
    log_w = tiny_log_w(model, guide, x).detach()  # the samples of the Renyi run
    tempered = -logmeanexp((N / B) * log_w, 0).sum()
    assert theirs == pytest.approx(tempered.item(), rel=1e-5)
    assert ours.item() == pytest.approx((-(N / B) * logmeanexp(log_w, 0).sum()).item(), rel=1e-5)
    assert abs(ours.item() - theirs) > 1.0


# --- 4. the ELBOs against hand computations and Pyro's Trace_ELBO / TraceMeanField_ELBO ------


@pytest.fixture
def vae1():
    cfg = VAEConfig(z_dims=(3,), hidden=((8,),))
    torch.manual_seed(0)
    x = (torch.rand(5, 12) < 0.5).float()
    return VAE(12, cfg), GaussianEncoder(12, cfg), x


@pytest.fixture
def vae2():
    cfg = VAEConfig(z_dims=(3, 2), hidden=((8,), (8,)))
    torch.manual_seed(0)
    x = (torch.rand(4, 6) < 0.5).float()
    return VAE(6, cfg), GaussianEncoder(6, cfg), x


def retrace(guide, x, seed, particles=1):
    """The guide's samples for random seed ``seed`` (what an objective called after
    ``torch.manual_seed(seed)`` draws)."""
    torch.manual_seed(seed)
    if particles == 1:
        return poutine.trace(guide).get_trace(x)
    with pyro.plate("particles", particles, dim=-2):
        return poutine.trace(guide).get_trace(x)


@pytest.mark.parametrize("particles", [1, 3])
def test_analytic_elbo_matches_hand_computation_one_layer(vae1, particles):
    model, guide, x = vae1
    torch.manual_seed(7)
    bound = ppvae.get_objective("elbo-analytic", particles).bound(model, guide, x)
    z = retrace(guide, x, 7, particles).nodes["z"]["value"]
    assert z.shape == ((particles, 5, 3) if particles > 1 else (5, 3))
    loc, scale = guide.layers[0](x)
    hand = bernoulli_lp(x, model.decoder(z)) - kl_std_normal(loc, scale)  # (L, B) or (B,)
    hand = hand.mean(0) if particles > 1 else hand
    torch.testing.assert_close(bound, hand)
    # and the Monte Carlo ELBO on the same samples: log q - log p instead of the KL
    torch.manual_seed(7)
    mc = ppvae.get_objective("elbo", particles).bound(model, guide, x)
    hand_mc = bernoulli_lp(x, model.decoder(z)) + std_normal_lp(z) - normal_lp(z, loc, scale)
    torch.testing.assert_close(mc, hand_mc.mean(0) if particles > 1 else hand_mc)


def test_beta_tempers_only_the_latent_terms(vae1):
    model, guide, x = vae1
    loc, scale = guide.layers[0](x)
    torch.manual_seed(2)
    got = ppvae.get_objective("elbo-analytic").bound(model, guide, x, beta=0.3)
    z = retrace(guide, x, 2).nodes["z"]["value"]
    torch.testing.assert_close(got, bernoulli_lp(x, model.decoder(z)) - 0.3 * kl_std_normal(loc, scale))
    torch.manual_seed(2)
    got = ppvae.get_objective("elbo").bound(model, guide, x, beta=0.3)
    torch.testing.assert_close(got, bernoulli_lp(x, model.decoder(z)) + 0.3 * (std_normal_lp(z) - normal_lp(z, loc, scale)))
    torch.manual_seed(2)
    got = ppvae.get_objective("iwae", 4).bound(model, guide, x, beta=0.3)
    z = retrace(guide, x, 2, 4).nodes["z"]["value"]
    log_w = bernoulli_lp(x, model.decoder(z)) + 0.3 * (std_normal_lp(z) - normal_lp(z, loc, scale))
    torch.testing.assert_close(got, logmeanexp(log_w, 0))


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("name, pyro_elbo", [("elbo", pyro.infer.Trace_ELBO), ("elbo-analytic", pyro.infer.TraceMeanField_ELBO)])
def test_elbos_equal_pyro_on_one_layer_vae(vae1, particles, name, pyro_elbo):
    model, guide, x = vae1
    params = [*model.parameters(), *guide.parameters()]
    torch.manual_seed(9)
    ours = ppvae.get_objective(name, particles).loss(model, guide, x)
    g_ours = torch.autograd.grad(ours, params)
    torch.manual_seed(9)
    elbo = pyro_elbo(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    theirs = elbo.differentiable_loss(model, guide, x)
    g_theirs = torch.autograd.grad(theirs, params)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)
    # with minibatch scaling, both are N / B times the minibatch sum
    torch.manual_seed(9)
    scaled = ppvae.get_objective(name, particles).loss(model, guide, x, num_data=50)
    torch.testing.assert_close(scaled, ours * 10)


def two_layer_terms(model, guide, x, tr):
    """The pieces of the two-layer ELBO at the samples of guide trace ``tr``."""
    z1, z2 = tr.nodes["z1"]["value"], tr.nodes["z2"]["value"]
    mq1, sq1 = guide.layers[0](x)
    mq2, sq2 = guide.layers[1](z1)
    mp1, sp1 = model.conditionals[0](z2)
    lik = bernoulli_lp(x, model.decoder(z1))
    return dict(
        lik=lik,
        mc_z1=normal_lp(z1, mp1, sp1) - normal_lp(z1, mq1, sq1),
        mc_z2=std_normal_lp(z2) - normal_lp(z2, mq2, sq2),
        kl_z2=kl_std_normal(mq2, sq2),
        kl_z1=kl_diag(mq1, sq1, mp1, sp1),
    )


def test_analytic_elbo_two_layers_uses_the_kl_for_the_top_layer_only(vae2):
    """Guide order z1 -> z2, model order z2 -> z1: p(z1 | z2) depends on z2, which the guide draws
    *after* z1 and from it, so KL(q(z1|x) || p(z1|z2)) is not the expectation of log q - log p
    (z2 is not independent of z1 under q). ppvae keeps the Monte Carlo term for z1 and uses the
    analytic KL for z2 only. Pyro's TraceMeanField_ELBO assumes a mean-field guide and uses the KL
    for both (it warns that it could not verify the restriction): a biased estimate here."""
    model, guide, x = vae2
    torch.manual_seed(13)
    ours = ppvae.get_objective("elbo-analytic").bound(model, guide, x)
    t = two_layer_terms(model, guide, x, retrace(guide, x, 13))
    torch.testing.assert_close(ours, t["lik"] + t["mc_z1"] - t["kl_z2"])

    torch.manual_seed(13)
    with pytest.warns(UserWarning, match="mean field"):
        tmf = pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    torch.testing.assert_close(tmf, -(t["lik"] - t["kl_z1"] - t["kl_z2"]).sum())
    assert abs(tmf.item() + ours.sum().item()) > 1e-3

    # In expectation: elbo-analytic agrees with the Monte Carlo ELBO, TraceMeanField does not.
    L = 20_000
    with torch.no_grad():
        t = two_layer_terms(model, guide, x, retrace(guide, x, 17, L))
    mc = (t["lik"] + t["mc_z1"] + t["mc_z2"]).sum(-1)  # (L,) per particle, summed over data
    analytic = (t["lik"] + t["mc_z1"] - t["kl_z2"]).sum(-1)
    mean_field = (t["lik"] - t["kl_z1"] - t["kl_z2"]).sum(-1)

    def paired(a, b):
        d = a - b
        return d.mean().item(), d.std().item() / math.sqrt(L)

    diff, se = paired(analytic, mc)
    assert abs(diff) < 4 * se
    diff, se = paired(mean_field, mc)
    assert abs(diff) > 5 * se
    # the hand quantities are what ppvae computes at these samples
    torch.manual_seed(17)
    with torch.no_grad():
        ours = ppvae.get_objective("elbo-analytic", L).bound(model, guide, x)
    torch.testing.assert_close(ours.sum(), analytic.mean(), rtol=1e-5, atol=1e-4)


def test_elbo_equals_trace_elbo_on_two_layer_vae(vae2):
    model, guide, x = vae2
    for particles in (1, 3):
        torch.manual_seed(21)
        ours = ppvae.get_objective("elbo", particles).loss(model, guide, x)
        torch.manual_seed(21)
        theirs = pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1).differentiable_loss(model, guide, x)
        torch.testing.assert_close(ours, theirs)


# --- names and settings ----------------------------------------------------------------------


def test_get_objective_names_and_errors():
    assert set(ppvae.OBJECTIVES) == {"elbo", "elbo-analytic", "iwae", "renyi", "miwae", "ciwae", "piwae"}
    obj = ppvae.get_objective("iwae", 5)
    assert obj.name == "iwae" and obj.num_particles == 5
    assert ppvae.get_objective(obj) is obj
    with pytest.raises(ConfigError, match="elbo, elbo-analytic, iwae, renyi") as e:
        ppvae.get_objective("iwea")
    assert "Did you mean 'iwae'" in str(e.value)
    for bad in (0, -3, 2.5):
        with pytest.raises(ConfigError, match="num_particles"):
            ppvae.get_objective("iwae", bad)
    with pytest.raises(ConfigError, match="elbo, elbo-analytic, iwae, renyi"):
        ppvae.TrainConfig(objective="renyii")
    with pytest.raises(ConfigError, match="num_particles"):
        ppvae.TrainConfig(num_particles=0)
