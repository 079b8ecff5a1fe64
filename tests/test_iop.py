"""The VAE with an implicit optimal prior: the density-ratio trainer against a closed-form log ratio,
the IOP bound and likelihood against hand computations, T's separate training phase, and resume."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

import ppvae
from ppvae.analysis import aggregate_posterior
from ppvae.density_ratio import DensityRatioEstimator
from ppvae.distributions import DiagonalNormalMixture
from ppvae.errors import ConfigError
from ppvae.experiments import iop_toy
from ppvae.guides.vae import GaussianEncoder
from ppvae.models.iop import IOPConfig, IOPVAE
from ppvae.models.vae import VAE, VAEConfig
from ppvae.objectives import get_objective
import ppvae.checkpoint
from ppvae.schemes import DensityRatioScheme, parameters_of

SMALL = dict(z_dims=(3,), hidden=((16,),))
SMALL_RATIO = dict(ratio_hidden=(16, 16), ratio_epochs=1, normalizer_samples=2000)


@pytest.fixture(scope="module")
def digits():
    return ppvae.load_dataset("digits")


def iop_pair(seed: int = 0, x_dim: int = 64, **options):
    torch.manual_seed(seed)
    config = IOPConfig(**{**SMALL, **SMALL_RATIO, **options})
    return IOPVAE(x_dim, config), GaussianEncoder(x_dim, config)


def vae_twin(model: IOPVAE) -> VAE:
    """A standard VAE with the IOP model's decoder weights."""
    vae = VAE(model.x_dim, VAEConfig(**SMALL))
    vae.load_state_dict({k: v for k, v in model.state_dict().items() if k in vae.state_dict()})
    return vae


def binary_x(n: int, d: int = 64, seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def set_constant_ratio(model: IOPVAE, c: float) -> None:
    with torch.no_grad():
        model.log_ratio.out.weight.zero_()
        model.log_ratio.out.bias.fill_(c)


def hand_terms(model: IOPVAE, guide, x: torch.Tensor, z: torch.Tensor):
    """log p(x | z), log N(z; 0, I), T(z), log q(z | x) and KL(q(z|x) || N(0, I)), written out."""
    loc, scale = guide.layers[0](x)
    logits = model.decoder(z)
    log_lik = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_q = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    kl = (-scale.log() + 0.5 * (scale**2 + loc**2) - 0.5).sum(-1)
    return log_lik, log_prior, model.log_ratio(z), log_q, kl


# --- the density-ratio trainer ---------------------------------------------------------------


def test_ratio_estimator_recovers_the_log_ratio_of_two_gaussians():
    # q = N(1, 0.5^2 I), p = N(0, I) in 2-D: log q/p = sum_d [log 2 - 2 (z_d - 1)^2 + z_d^2 / 2]
    def exact(z):
        return (math.log(2.0) - 2.0 * (z - 1.0) ** 2 + 0.5 * z**2).sum(-1)

    torch.manual_seed(0)
    T = DensityRatioEstimator(2, (64, 64), dropout=0.5)
    optimizer = torch.optim.Adam(T.parameters(), lr=2e-3)
    for step in range(1200):
        if step == 800:  # a smaller step at the end, so the final iterate is not SGD noise
            for group in optimizer.param_groups:
                group["lr"] = 2e-4
        loss, accuracy = T.loss_and_accuracy(1.0 + 0.5 * torch.randn(512, 2), torch.randn(512, 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    g = torch.linspace(0.25, 1.75, 16)  # q's +-1.5 sd box, where both densities have mass
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        err = (T(grid) - exact(grid)).abs()
        z_p = torch.randn(200_000, 2)
        log_z = torch.logsumexp(T(z_p), 0) - math.log(z_p.shape[0])
    assert err.mean() < 0.2, float(err.mean())
    # the target varies: the best constant T (the median) would miss by far more than the tolerance
    assert (exact(grid) - exact(grid).median()).abs().mean() > 0.5
    # a good T makes N(0, I) exp(T) integrate to ~1 (E_p[q/p] = 1)
    assert abs(float(log_z)) < 0.15
    # the Bayes accuracy of q vs p here is ~0.87; the returned metrics are the classifier's
    assert 0.75 < float(accuracy) < 0.95


def test_ratio_estimator_is_deterministic_outside_training():
    torch.manual_seed(0)
    T = DensityRatioEstimator(2, (32,), dropout=0.5)
    z = torch.randn(100, 2)
    assert torch.equal(T(z), T(z))  # dropout off by default (the Pyro model calls it like this)
    assert not torch.equal(T(z, dropout=True), T(z))
    zq, zp = torch.randn(8, 2) + 1, torch.randn(8, 2)
    # the loss is the balanced logistic loss of T on the two sample sets (no dropout here)
    expected = torch.nn.functional.softplus(-T(zq)).mean() + torch.nn.functional.softplus(T(zp)).mean()
    torch.testing.assert_close(T.loss(zq, zp, dropout=False), expected)


# --- the IOP bound and likelihood ------------------------------------------------------------


def test_iop_bound_with_zero_ratio_equals_the_standard_vae_bound():
    model, guide = iop_pair()
    set_constant_ratio(model, 0.0)
    vae = vae_twin(model)
    x = binary_x(10)
    objective = get_objective("elbo-analytic")
    torch.manual_seed(3)
    iop_bound = objective.bound(model, guide, x)
    torch.manual_seed(3)
    vae_bound = objective.bound(vae, guide, x)
    assert torch.equal(iop_bound, vae_bound)


def test_iop_bound_and_gradients_equal_the_hand_computation():
    model, guide = iop_pair()
    with torch.no_grad():  # a T far from 0, so the factor matters
        model.log_ratio.out.weight.mul_(20.0)
        model.log_ratio.out.bias.fill_(0.7)
    vae = vae_twin(model)
    x = binary_x(10)
    objective = get_objective("elbo-analytic")

    torch.manual_seed(3)
    z = poutine.trace(guide).get_trace(x).nodes["z"]["value"]
    torch.manual_seed(3)
    iop_bound = objective.bound(model, guide, x)
    torch.manual_seed(3)
    vae_bound = objective.bound(vae, guide, x)
    with torch.no_grad():
        t = model.log_ratio(z)
    assert t.abs().mean() > 0.5
    torch.testing.assert_close(iop_bound, vae_bound + t)

    # ELBO = E_q[log p(x|z)] - KL(q || N(0, I)) + E_q[T(z)] at the same z, and the gradients of
    # encoder and decoder (which reach the encoder through T(z) too) match autograd of that.
    loc, scale = guide.layers[0](x)
    eps = ((z - loc) / scale).detach()
    z_hand = loc + scale * eps
    log_lik, _, t_hand, _, kl = hand_terms(model, guide, x, z_hand)
    hand = log_lik - kl + t_hand
    torch.testing.assert_close(iop_bound, hand.detach())

    n = 500
    trainable = parameters_of(model, guide, x, excluded=[model.log_ratio])
    torch.manual_seed(3)
    grads = torch.autograd.grad(objective.loss(model, guide, x, num_data=n), trainable)
    hand_grads = torch.autograd.grad(-n / x.shape[0] * hand.sum(), trainable)
    for g, h in zip(grads, hand_grads):
        torch.testing.assert_close(g, h)
    # the T(z) term does move the encoder's gradient
    torch.manual_seed(3)
    vae_grads = torch.autograd.grad(objective.loss(vae, guide, x, num_data=n), list(guide.parameters()))
    enc = [id(p) for p in guide.parameters()]
    iop_enc = [g for g, p in zip(grads, trainable) if id(p) in enc]
    assert any(not torch.allclose(a, b) for a, b in zip(iop_enc, vae_grads))


def test_log_likelihood_includes_the_log_ratio():
    model, guide = iop_pair()
    with torch.no_grad():
        model.log_ratio.out.weight.mul_(20.0)
    x = binary_x(2)
    S = 50
    torch.manual_seed(4)
    with pyro.plate("_ppvae_particles", S, dim=-2):
        z = poutine.trace(guide).get_trace(x).nodes["z"]["value"]  # (S, B, D)
    torch.manual_seed(4)
    got = ppvae.log_likelihood(model, guide, x, num_samples=S)
    with torch.no_grad():
        log_lik, log_prior, t, log_q, _ = hand_terms(model, guide, x, z)
        hand = torch.logsumexp(log_lik + log_prior + t - log_q, 0) - math.log(S)
        without_t = torch.logsumexp(log_lik + log_prior - log_q, 0) - math.log(S)
    torch.testing.assert_close(got, hand)
    assert (got - without_t).abs().min() > 1e-3


def test_constant_ratio_shifts_log_likelihood_and_normalizer_by_the_constant():
    model, guide = iop_pair()
    c = 0.8
    set_constant_ratio(model, c)
    vae = vae_twin(model)
    x = binary_x(5)
    torch.manual_seed(2)
    ll_iop = ppvae.log_likelihood(model, guide, x, num_samples=100)
    torch.manual_seed(2)
    ll_vae = ppvae.log_likelihood(vae, guide, x, num_samples=100)
    torch.testing.assert_close(ll_iop, ll_vae + c)
    # exp(c) N(0, I) integrates to exp(c): the likelihood is optimistic by exactly log Z = c
    assert model.log_normalizer(1000) == pytest.approx(c, abs=1e-5)
    assert model.normalize_prior(1000) == pytest.approx(c, abs=1e-5)
    assert model.log_normalizer(1000) == pytest.approx(0.0, abs=1e-5)
    torch.manual_seed(2)
    torch.testing.assert_close(ppvae.log_likelihood(model, guide, x, num_samples=100), ll_vae)


class LinearRatio(torch.nn.Module):
    """T(z) = a.z: the prior N(0, I) exp(a.z) is N(a, I) times exp(|a|^2 / 2)."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.register_buffer("a", a)

    def forward(self, z, *, dropout=False):
        return z @ self.a


def test_normalizer_and_prior_samples_for_a_linear_ratio():
    model, _ = iop_pair()
    a = torch.tensor([0.5, -0.3, 0.2])
    model.log_ratio = LinearRatio(a)
    torch.manual_seed(0)
    assert model.log_normalizer(200_000) == pytest.approx(float(a @ a) / 2, abs=0.01)
    z = model.sample_latents(20_000, proposals=256)
    assert z.shape == (20_000, 3)
    torch.testing.assert_close(z.mean(0), a, atol=0.04, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3), atol=0.04, rtol=0)


# --- training: T's own phase, exclusion from the ELBO optimizer, resume ----------------------


def _fit(model, guide, data, **kw):
    return ppvae.fit(model, guide, data, epochs=kw.pop("epochs", 2), batch_size=100, progress=False, device="cpu", **kw)


def test_fit_trains_every_parameter_and_t_only_in_its_own_phase(digits):
    model, guide = iop_pair()
    x = digits.train[:5]
    ratio_ids = {id(p) for p in model.log_ratio.parameters()}
    scheme = DensityRatioScheme()
    scheme.setup(model, guide, x, ppvae.TrainConfig())
    groups = scheme.param_groups(model, guide, x, ppvae.TrainConfig())
    assert set(groups) == {"pair", "ratio"}
    assert {id(p) for p in groups["ratio"].params} == ratio_ids
    elbo_ids = {id(p) for p in groups["pair"].params}
    assert not ratio_ids & elbo_ids
    assert elbo_ids == {id(p) for p in [*model.parameters(), *guide.parameters()]} - ratio_ids

    before = {f"{who}.{k}": v.clone() for who, m in (("model", model), ("guide", guide)) for k, v in m.named_parameters()}
    result = _fit(model, guide, digits)
    after = {f"{who}.{k}": v for who, m in (("model", model), ("guide", guide)) for k, v in m.named_parameters()}
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged
    last = result.history[-1]
    assert {"ratio_loss", "ratio_accuracy", "prior_log_z", "valid_elbo-analytic"} <= set(last)
    assert 0.0 < last["ratio_loss"] < 2 * math.log(2) + 0.5
    assert math.isfinite(last["valid_elbo-analytic"])

    # with no ratio epochs T never moves, although the ELBO's backward passes through it
    model, guide = iop_pair(ratio_epochs=0)
    t_before = [p.clone() for p in model.log_ratio.parameters()]
    enc_before = [p.clone() for p in guide.parameters()]
    _fit(model, guide, digits, epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(t_before, model.log_ratio.parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(enc_before, guide.parameters()))


def test_resume_is_bit_identical(digits, tmp_path):
    model, guide = iop_pair()
    straight = _fit(model, guide, digits, epochs=3, out_dir=tmp_path / "straight").history
    part, part_guide = iop_pair()
    _fit(part, part_guide, digits, epochs=2, out_dir=tmp_path / "resumed")
    resumed, resumed_guide = iop_pair(seed=9)  # a different init: everything must come from the checkpoint
    history = _fit(resumed, resumed_guide, digits, epochs=3, out_dir=tmp_path / "resumed", resume=True).history
    for a, b in ((model, resumed), (guide, resumed_guide)):
        for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
            assert k == k2
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, v2), k
    adams = [ppvae.checkpoint.load(tmp_path / run / "last.pt")["optimizers"] for run in ("straight", "resumed")]
    assert set(adams[0]) == set(adams[1]) == {"pair", "ratio"}
    for group in ("pair", "ratio"):
        adam, adam2 = adams[0][group]["state"], adams[1][group]["state"]
        assert adam.keys() == adam2.keys() and adam
        for i in adam:
            for key in adam[i]:
                assert torch.equal(adam[i][key], adam2[i][key])
    drop_time = [[{k: v for k, v in h.items() if k not in ppvae.train.TIMING_KEYS} for h in hs] for hs in (straight, history)]
    assert drop_time[0] == drop_time[1]  # ratio_loss, prior_log_z and the valid bound included


def test_normalize_option_keeps_the_prior_normalized(digits):
    model, guide = iop_pair(normalize=True, normalizer_samples=20_000)
    result = _fit(model, guide, digits, epochs=1)
    assert float(model.log_z) == pytest.approx(result.history[-1]["prior_log_z"])
    assert float(model.log_z) != 0.0
    torch.manual_seed(1)
    assert model.log_normalizer(20_000) == pytest.approx(0.0, abs=0.05)


# --- config and registry ---------------------------------------------------------------------


def test_registry_and_config_checks():
    model, guide, config = ppvae.build("iop", 10, {"z_dims": (2,), "hidden": ((8,),), "ratio_hidden": [8]})
    assert isinstance(model, IOPVAE) and isinstance(guide, GaussianEncoder)
    assert config.ratio_hidden == (8,) and config.ratio_epochs == 10  # the authors' schedule by default
    assert model.log_ratio.hidden[0].in_features == 2
    with pytest.raises(ConfigError, match="one stochastic layer"):
        IOPConfig(stochastic_layers=2)
    with pytest.raises(ConfigError, match="ratio_epochs"):
        IOPConfig(ratio_epochs=-1)
    with pytest.raises(ConfigError, match="dropout"):
        IOPVAE(10, IOPConfig(ratio_dropout=1.0))
    with pytest.raises(ConfigError, match="IOPConfig"):
        IOPVAE(10, VAEConfig())


# --- the toy experiment ------------------------------------------------------------------------


def test_separation_statistic_on_known_codes():
    offsets = torch.tensor([[0.3, 0.0], [-0.3, 0.0], [0.0, 0.3], [0.0, -0.3]])
    centres = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    codes = [c + offsets for c in centres]
    # 4 sides of length 2 and 2 diagonals of 2 sqrt 2, over an RMS spread of 0.3
    assert iop_toy.separation(codes) == pytest.approx((8 + 4 * math.sqrt(2)) / 6 / 0.3)


def test_toy_experiment_runs(tmp_path):
    results = iop_toy.run(tmp_path, epochs=2, repeats=50, num_codes=50)
    for name in ("vae", "iop"):
        assert (tmp_path / f"codes_{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert math.isfinite(results[name]["separation"]) and results[name]["log_px"] < 0
    iop = results["iop"]
    assert iop["log_px_normalized"] == pytest.approx(iop["log_px"] - iop["prior_log_z"])
    assert (tmp_path / "results.json").exists()


class GaussianRatio(torch.nn.Module):
    """T(z) = log N(z; m, s^2 I) - log N(z; 0, I), the exact log ratio of a concentrated q: Z = 1."""

    def __init__(self, m: torch.Tensor, s: float):
        super().__init__()
        self.register_buffer("m", m)
        self.s = s

    def forward(self, z, *, dropout=False):
        q = torch.distributions.Normal(self.m, self.s).log_prob(z).sum(-1)
        return q - torch.distributions.Normal(torch.zeros_like(self.m), 1.0).log_prob(z).sum(-1)


def test_defensive_proposal_fixes_the_log_normalizer_of_a_concentrated_ratio():
    """With q = N(m, 0.1^2 I) far from N(0, I), sampling the prior almost never lands where exp(T)
    lives: its log Z is biased low by nats and its Pareto-k flags it. The defensive mixture with
    the aggregate posterior as proposal recovers log Z = 0."""
    model, _ = iop_pair()
    d = model.prior_loc.shape[0]
    m = torch.full((d,), 1.5)
    model.log_ratio = GaussianRatio(m, 0.1)
    torch.manual_seed(0)
    naive, k_naive, _ = model.log_normalizer(20_000, diagnostics=True)
    assert naive < -1.0 and k_naive > 0.7
    # the aggregate posterior of a guide whose q(z|x) are N(m + small offsets, 0.1^2)
    proposal = DiagonalNormalMixture(m + 0.05 * torch.randn(50, d), torch.full((50, d), 0.1))
    log_z, k_hat, ess = model.log_normalizer(20_000, proposal=proposal, diagnostics=True)
    assert log_z == pytest.approx(0.0, abs=0.03) and k_hat < 0.5 and ess > 5000
    # and it stays right where the naive estimator is fine (the linear ratio: log Z = |a|^2 / 2)
    a = torch.tensor([0.5, -0.3, 0.2])
    model.log_ratio = LinearRatio(a)
    wide = DiagonalNormalMixture(torch.zeros(1, d), torch.full((1, d), 2.0))
    assert model.log_normalizer(100_000, proposal=wide) == pytest.approx(float(a @ a) / 2, abs=0.01)


def test_aggregate_posterior_is_the_mixture_of_the_guide_posteriors():
    model, guide = iop_pair()
    x = binary_x(6)
    q = aggregate_posterior(guide, x)
    loc, scale = guide.layers[0](x)
    torch.testing.assert_close(q.loc, loc)
    torch.testing.assert_close(q.scale, scale)
    z = torch.randn(7, loc.shape[1])
    hand = torch.logsumexp(torch.stack([torch.distributions.Normal(loc[i], scale[i]).log_prob(z).sum(-1) for i in range(6)]), 0) - math.log(6)
    torch.testing.assert_close(q.log_prob(z), hand)
    with pytest.raises(ConfigError, match="diagonal Normal"):
        aggregate_posterior(lambda x: pyro.sample("z", pyro.distributions.Bernoulli(0.5)), x)
