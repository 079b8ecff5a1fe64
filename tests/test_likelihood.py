"""``ppvae.log_likelihood`` against the closed-form marginal of probabilistic PCA.

With z ~ N(0, I), x ~ N(W z + b, sigma^2 I) the marginal is N(x; b, W W^T + sigma^2 I) and the
posterior is Gaussian, so the importance-sampled estimate can be checked exactly: with the exact
posterior as proposal every weight equals p(x) and one sample suffices.
"""

from __future__ import annotations

import math

import pytest
import torch

import ppvae
import ppvae.likelihood as likelihood_module
from ppvae.errors import ConfigError, DataError


def test_exact_posterior_guide_gives_log_px_with_one_sample(linear_gaussian):
    lg = linear_gaussian
    exact = lg.exact_log_px()
    for s in (1, 3):
        est = ppvae.log_likelihood(lg.model, lg.exact_guide(), lg.x, num_samples=s)
        assert est.shape == (lg.x.shape[0],)
        assert est.device == lg.x.device
        assert est.dtype == torch.float32
        torch.testing.assert_close(est.double(), exact, atol=1e-4, rtol=0)
    # the data points differ, so a per-batch (joint) normalizer would not pass the check above
    assert exact.std() > 0.5


def test_reasonable_guide_is_within_005_nats(linear_gaussian):
    lg = linear_gaussian
    torch.manual_seed(0)
    est = ppvae.log_likelihood(lg.model, lg.guide(scale_factor=1.2), lg.x, num_samples=5000)
    assert est.shape == (lg.x.shape[0],)
    err = (est.double() - lg.exact_log_px()).abs()
    assert err.max() < 0.05, err.max()


def test_a_poor_guide_is_biased_low(linear_gaussian):
    """Jensen: the estimate's expectation is a lower bound; with a poor proposal and few samples the
    bias is visible (the estimator is not simply returning the exact value by construction)."""
    lg = linear_gaussian
    torch.manual_seed(0)
    est = ppvae.log_likelihood(lg.model, lg.guide(shift=1.0, scale_factor=0.5), lg.x, num_samples=10)
    gap = lg.exact_log_px() - est.double()
    assert gap.mean() > 0.3


def test_chunking_is_invariant_with_the_exact_guide(linear_gaussian):
    lg = linear_gaussian
    whole = ppvae.log_likelihood(lg.model, lg.exact_guide(), lg.x, num_samples=20)
    tiny = ppvae.log_likelihood(lg.model, lg.exact_guide(), lg.x, num_samples=20, chunk_elements=3)
    odd = ppvae.log_likelihood(lg.model, lg.exact_guide(), lg.x, num_samples=20, batch_size=7, chunk_elements=50)
    torch.testing.assert_close(tiny, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(odd, whole, atol=1e-5, rtol=0)


def test_chunking_traces_bounded_chunks_covering_every_sample(linear_gaussian, monkeypatch):
    """Each trace scores at most chunk_elements samples x datapoints, and every datapoint gets
    exactly num_samples samples; the answer matches the unchunked one up to Monte Carlo noise."""
    lg = linear_gaussian
    x = lg.x[:10]
    calls: list[tuple[int, int]] = []
    real = likelihood_module.trace_pair

    def spy(model, guide, xb, *args, num_particles=1, **kwargs):
        calls.append((num_particles, xb.shape[0]))
        return real(model, guide, xb, *args, num_particles=num_particles, **kwargs)

    monkeypatch.setattr(likelihood_module, "trace_pair", spy)
    guide = lg.guide(scale_factor=1.2)
    torch.manual_seed(1)
    tiny = ppvae.log_likelihood(lg.model, guide, x, num_samples=1000, chunk_elements=37)
    assert all(k * b <= 37 for k, b in calls)
    assert sum(k * b for k, b in calls) == 1000 * x.shape[0]
    assert len(calls) > 1000 * x.shape[0] / 37  # it really was chunked
    calls.clear()
    torch.manual_seed(2)
    whole = ppvae.log_likelihood(lg.model, guide, x, num_samples=1000)
    limit = likelihood_module.CHUNK_ELEMENTS  # the default chunk bounds every trace too
    assert all(k * b <= limit for k, b in calls) and sum(k * b for k, b in calls) == 1000 * x.shape[0]
    assert len(calls) == -(-1000 * x.shape[0] // limit)  # and fills it: as few traces as it allows
    assert (tiny - whole).abs().max() < 0.05
    assert (tiny.double() - lg.exact_log_px(x)).abs().max() < 0.05


def test_diagnostics_ess_and_pareto_k(linear_gaussian):
    lg = linear_gaussian
    x = lg.x[:8]
    exact = ppvae.log_likelihood(lg.model, lg.exact_guide(), x, num_samples=200, diagnostics=True)
    assert isinstance(exact, likelihood_module.ImportanceResult)
    assert exact.log_px.shape == exact.ess.shape == exact.pareto_k.shape == (8,)
    torch.testing.assert_close(exact.log_px.double(), lg.exact_log_px(x), atol=1e-4, rtol=0)
    # constant weights: the effective sample size is the sample size. (Their Pareto-k is not
    # checked: arviz's tail fit degenerates on exactly constant weights and may return inf.)
    torch.testing.assert_close(exact.ess, torch.full((8,), 200.0), atol=1e-2, rtol=0)
    torch.manual_seed(0)
    good = ppvae.log_likelihood(lg.model, lg.guide(scale_factor=1.2), x, num_samples=200, diagnostics=True)
    assert (good.pareto_k < 0.5).all()  # a wider-than-posterior proposal: light-tailed weights
    assert (good.ess > 100).all()
    torch.manual_seed(0)
    poor = ppvae.log_likelihood(lg.model, lg.guide(shift=1.0, scale_factor=0.5), x, num_samples=200, diagnostics=True)
    assert (poor.ess < 100).all()
    assert poor.pareto_k.mean() > 0.7  # too-narrow proposal: heavy-tailed weights


def test_bad_arguments(linear_gaussian):
    lg = linear_gaussian
    with pytest.raises(ConfigError, match="num_samples"):
        ppvae.log_likelihood(lg.model, lg.exact_guide(), lg.x, num_samples=0)
    with pytest.raises(ConfigError, match="chunk_elements"):
        ppvae.log_likelihood(lg.model, lg.exact_guide(), lg.x, chunk_elements=0)
    with pytest.raises(DataError, match="shape"):
        ppvae.log_likelihood(lg.model, lg.exact_guide(), lg.x[0])
    with pytest.raises(DataError, match="torch.Tensor"):
        ppvae.log_likelihood(lg.model, lg.exact_guide(), lg.x.numpy())


def test_non_finite_log_px_is_a_data_error(linear_gaussian):
    lg = linear_gaussian
    x = lg.x.clone()
    x[3, 0] = math.inf
    with pytest.raises(DataError, match="datapoint 3"):
        ppvae.log_likelihood(lg.model, lg.exact_guide(), x, num_samples=2)


@pytest.mark.cuda
def test_cuda_training_and_log_likelihood_match_cpu(digits):
    """A VAE trained a few steps on CUDA; its log p(x) on CUDA is a CUDA tensor and matches the CPU
    estimate for the same parameters within Monte Carlo tolerance."""
    import copy

    from ppvae.guides.vae import GaussianEncoder
    from ppvae.models.vae import VAE, VAEConfig

    cfg = VAEConfig(z_dims=(4,), hidden=((32,),))
    torch.manual_seed(0)
    model, guide = VAE(digits.x_dim, cfg), GaussianEncoder(digits.x_dim, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    ppvae.fit(model, guide, digits, epochs=1, batch_size=100, lr=1e-2, device="cuda", progress=False)
    assert all(p.is_cuda for p in model.parameters())
    assert all(not torch.equal(a, p.detach().cpu()) for a, p in zip(before, model.parameters()))
    x = digits.test[:50]
    on_gpu = ppvae.log_likelihood(model, guide, x.cuda(), num_samples=2000)
    assert on_gpu.is_cuda and on_gpu.shape == (50,)
    on_cpu = ppvae.log_likelihood(copy.deepcopy(model).cpu(), copy.deepcopy(guide).cpu(), x, num_samples=2000)
    assert not on_cpu.is_cuda
    assert (on_gpu.cpu() - on_cpu).abs().max() < 0.3
    assert abs(float(on_gpu.mean().cpu() - on_cpu.mean())) < 0.05


def test_pareto_k_of_an_exact_proposal_is_not_flagged():
    """Constant importance weights (guide = exact posterior): the estimate is exact, so Pareto-k
    must not exceed the 0.7 threshold (arviz alone reports inf there)."""
    import numpy as np

    from ppvae.likelihood import pareto_k

    lw = np.zeros((3, 200))
    lw[2] = np.random.default_rng(0).standard_t(1.5, 200) * 3  # heavy-tailed: flagged
    k = pareto_k(lw)
    assert k[0] == 0 and k[1] == 0 and k[2] > 0.7
