"""Parzen-window log-likelihood: against a brute-force double loop, a single kernel in closed
form, bandwidth selection on data with a known kernel width, and chunking."""

from __future__ import annotations

import math

import pytest
import torch

from ppvae.errors import ConfigError
from ppvae.parzen import parzen_evaluate, parzen_log_likelihood, select_bandwidth


def _brute_force(x, samples, sigma):
    """log (1/n) sum_i prod_d N(x_d; s_id, sigma), one (test point, sample) pair at a time."""
    x, samples = x.double(), samples.double()
    out = []
    for xi in x:
        terms = [torch.distributions.Normal(s, sigma).log_prob(xi).sum() for s in samples]
        out.append(torch.logsumexp(torch.stack(terms), 0) - math.log(len(samples)))
    return torch.stack(out)


@pytest.mark.parametrize("sigma", [0.1, 0.3, 1.0])
def test_equals_brute_force_double_loop(sigma):
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(40, 20, generator=g)
    x = torch.rand(15, 20, generator=g)
    x[0] = samples[3]  # a test point on a kernel centre: distance 0
    expected = _brute_force(x, samples, sigma)
    got = parzen_log_likelihood(x, samples, sigma)
    assert got.dtype == torch.float64 and got.shape == (15,)
    # float32 product: relative error of the squared distances ~1e-7, so ~1e-4 nats at sigma 0.1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 / sigma**2)
    torch.testing.assert_close(
        parzen_log_likelihood(x, samples, sigma, exact=True), expected, rtol=1e-10, atol=1e-9
    )


def test_single_kernel_is_the_gaussian_log_density():
    g = torch.Generator().manual_seed(1)
    D, sigma = 784, 0.2
    s = torch.rand(1, D, generator=g)
    x = (s + 0.1 * torch.randn(5, D, generator=g)).double()
    d2 = ((x - s.double()) ** 2).sum(1)
    closed_form = -0.5 * D * math.log(2 * math.pi * sigma**2) - d2 / (2 * sigma**2)
    torch.testing.assert_close(
        parzen_log_likelihood(x, s, sigma, exact=True), closed_form, rtol=1e-12, atol=1e-9
    )
    torch.testing.assert_close(parzen_log_likelihood(x, s, sigma), closed_form, rtol=0, atol=2e-3)


def test_bandwidth_selection_finds_the_noise_level():
    """Validation points = samples + N(0, sigma0^2 I) noise in 100 dims, samples far apart: the
    Parzen fit is then the true density up to the other kernels' negligible weight, and its
    maximum-likelihood bandwidth is sigma0."""
    g = torch.Generator().manual_seed(2)
    sigmas = torch.logspace(-1, 0, 10)
    for sigma0_index in (2, 6):
        sigma0 = float(sigmas[sigma0_index]) * 1.05  # off the grid, nearest to one value
        samples = 5.0 * torch.randn(200, 100, generator=g)
        valid = samples[:100] + sigma0 * torch.randn(100, 100, generator=g)
        best, scores = select_bandwidth(valid, samples, sigmas)
        assert scores.shape == (10,)
        assert best == pytest.approx(float(sigmas[sigma0_index]))


def test_chunking_matches_no_chunking():
    """With the product in float64 the blocks change nothing but float64 rounding; in float32
    the product itself rounds differently per block shape (BLAS picks other kernels, e.g. a
    matrix-vector product for one sample per block), by ~1e-6 of the squared distances."""
    g = torch.Generator().manual_seed(3)
    samples, x = torch.rand(300, 50, generator=g), torch.rand(70, 50, generator=g)
    for exact, atol in ((True, 1e-10), (False, 2e-4)):
        whole = parzen_log_likelihood(x, samples, 0.2, chunk=(1000, 1000), exact=exact)
        for chunk in (7, (1, 300), (70, 1), (16, 64)):
            got = parzen_log_likelihood(x, samples, 0.2, chunk=chunk, exact=exact)
            torch.testing.assert_close(got, whole, rtol=0, atol=atol)
    best, scores = select_bandwidth(x, samples, chunk=(1000, 1000))
    best_c, scores_c = select_bandwidth(x, samples, chunk=(9, 40))
    assert best == best_c
    torch.testing.assert_close(scores_c, scores, rtol=0, atol=2e-4)


def test_parzen_evaluate_reports_mean_and_standard_error():
    g = torch.Generator().manual_seed(4)
    samples = torch.rand(200, 30, generator=g)
    valid, test = torch.rand(50, 30, generator=g), torch.rand(80, 30, generator=g)
    report = parzen_evaluate(test, samples, valid)
    best, _ = select_bandwidth(valid, samples)
    ll = parzen_log_likelihood(test, samples, best)
    assert report["sigma"] == best
    assert report["mean"] == pytest.approx(float(ll.mean()))
    assert report["se"] == pytest.approx(float(ll.std() / math.sqrt(80)))
    assert report["num_samples"] == 200 and len(report["sigmas_tried"]) == 10


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="same D"):
        parzen_log_likelihood(torch.rand(3, 4), torch.rand(5, 6), 0.1)
    with pytest.raises(ConfigError, match="sigma"):
        parzen_log_likelihood(torch.rand(3, 4), torch.rand(5, 4), 0.0)
    with pytest.raises(ConfigError, match="chunk"):
        parzen_log_likelihood(torch.rand(3, 4), torch.rand(5, 4), 0.1, chunk=0)
