"""Parzen-window log-likelihood: the number GAN and AAE papers report for models without one.

A model that can only *sample* (a GAN generator, an adversarial autoencoder's decoder) is scored
by fitting an isotropic Gaussian kernel density estimate to ``n`` of its samples ``S`` and
evaluating it on test images::

    log p(x) = logsumexp_i log N(x; s_i, sigma^2 I) - log n

with the bandwidth ``sigma`` chosen on held-out validation images from ``logspace(-1, 0, 10)``,
10,000 samples, and the mean and standard error reported over the test set (Breuleux, Bengio &
Vincent 2011; Goodfellow et al. 2014, whose ``parzen_ll.py`` is the reference implementation).

**The number is weak, and ppvae reports it only because the papers do.** Theis, van den Oord &
Bethge (2016) show that in 784 dimensions with 10,000 samples the Parzen estimate is largely
unrelated both to the model's true log-likelihood and to sample quality: it is far below the
likelihood even for the true data distribution, and the 10,000 centres of k-means on the training
set score *higher* than 10,000 real images. Do not compare it with importance-sampled log p(x)
(:func:`ppvae.log_likelihood`), and compare it across models only with the same number of
samples, the same bandwidth grid and the same validation and test images.

Cost and accuracy: the squared distances use ``||x - s||^2 = ||x||^2 - 2 x.s + ||s||^2`` after
centring both sets on the samples' mean, with a float32 matrix product for ``x.s`` (the only
O(N n D) step), the norms in float64, and a max-shifted log-sum-exp whose sums and shifts are
float64. 10,000 test points x 10,000 samples x 784 dims take 2.9 s of CPU time with one torch
thread on the project's 2-core CPU (7.7 s wall while the machine was shared);
``python -m ppvae.parzen ROOT`` measures it (docs/sample_quality.md). Against an all-float64
computation (``exact=True``, ~1.8x the time) the largest error over 1,000 MNIST test images is
0.0019 nats at sigma = 0.1, 0.0005 at 0.2 and 0.00002 at 1.0: the float32 rounding of the
product, far below the standard error (~2 nats) of the reported mean.

References:
    O. Breuleux, Y. Bengio, P. Vincent. "Quickly generating representative samples from an
    RBM-derived process." Neural Computation 23(8), 2011.
    I. Goodfellow et al. "Generative adversarial nets." NeurIPS 2014 (code: parzen_ll.py).
    L. Theis, A. van den Oord, M. Bethge. "A note on the evaluation of generative models."
    ICLR 2016.
"""

from __future__ import annotations

import math
import time

import torch

from ppvae.errors import ConfigError

DEFAULT_SIGMAS = torch.logspace(-1, 0, 10, dtype=torch.float64)  # Goodfellow et al.'s grid: 0.1 ... 1.0
DEFAULT_CHUNK = (1000, 10_000)  # test points x samples per block: ~200 MB of scratch at most


def _chunks(chunk: int | tuple[int, int]) -> tuple[int, int]:
    rows, cols = (chunk, chunk) if isinstance(chunk, int) else tuple(chunk)
    if int(rows) < 1 or int(cols) < 1:
        raise ConfigError(f"chunk must be positive, got {chunk!r}")
    return int(rows), int(cols)


def _check(x: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as tensors on the samples' device (the work is done there)."""
    samples = torch.as_tensor(samples).detach()
    x = torch.as_tensor(x).detach().to(samples.device)
    if x.dim() != 2 or samples.dim() != 2 or x.shape[1] != samples.shape[1]:
        raise ConfigError(
            f"expected test points (N, D) and samples (n, D) with the same D, got "
            f"{tuple(x.shape)} and {tuple(samples.shape)}; flatten images to rows first"
        )
    if samples.shape[0] == 0:
        raise ConfigError("the Parzen window needs at least one sample")
    return x, samples


def _sq_dist_blocks(x, samples, chunk, exact):
    """Yield ``(row_slice, [blocks of ||x - s||^2 over sample chunks])`` per chunk of rows.

    Both sets are first centred on the samples' mean (distances do not change; the norms, and so
    the cancellation in ``||x||^2 - 2 x.s + ||s||^2``, get smaller). The norms are float64; the
    blocks are float32 (float64 with ``exact``): one fused ``addmm`` per block.
    """
    rows, cols = _chunks(chunk)
    dtype = torch.float64 if exact else torch.float32
    centre = samples.to(torch.float64).mean(0)
    s64 = samples.to(torch.float64) - centre
    s_norm = (s64 * s64).sum(1)  # (n,) float64
    s_mm = s64.to(dtype)
    for r in range(0, x.shape[0], rows):
        xb64 = x[r : r + rows].to(torch.float64) - centre
        x_norm = (xb64 * xb64).sum(1, keepdim=True)  # (B, 1) float64
        xb_mm = xb64.to(dtype)
        blocks = []
        for c in range(0, samples.shape[0], cols):
            # the norms are rounded once each to the block dtype (as accurate as the product)
            d2 = x_norm.to(dtype) + s_norm[c : c + cols].to(dtype)  # (B, C)
            d2.addmm_(xb_mm, s_mm[c : c + cols].T, alpha=-2.0)  # the O(B C D) step
            blocks.append(d2.clamp_(min=0.0))  # rounding can push a distance of ~0 below 0
        yield slice(r, r + xb64.shape[0]), blocks


def _log_kde(blocks: list[torch.Tensor], sigma: float, n: int, dim: int) -> torch.Tensor:
    """log (1/n) sum_i N(x; s_i, sigma^2 I) from the squared-distance blocks (B, C_j); float64.

    A max-shifted log-sum-exp per block, its sum accumulated in float64; the blocks are combined
    in float64. Shifted exponents below -80 are raised to -80: in float32 they would otherwise be
    denormal numbers, which are ~4x slower to compute, and each adds at most e^-80 ~ 2e-35 times
    the largest term (nothing at float precision).
    """
    scale = -0.5 / sigma**2
    parts = []
    for b in blocks:
        d_min = b.amin(1, keepdim=True)  # (B, 1): the largest term's distance
        z = (b - d_min).mul_(scale)  # (B, C) <= 0, a new block: ``b`` is reused for other sigmas
        z.clamp_(min=-80.0).exp_()
        # the largest exponent in float64: in float32 it would carry an error of ~1e-4 nats
        parts.append(z.sum(1, dtype=torch.float64).log_() + d_min[:, 0].to(torch.float64) * scale)
    lse = parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, 1), dim=1)
    return lse - math.log(n) - 0.5 * dim * math.log(2 * math.pi * sigma**2)


@torch.no_grad()
def parzen_log_likelihood(
    x: torch.Tensor,
    samples: torch.Tensor,
    sigma: float,
    *,
    chunk: int | tuple[int, int] = DEFAULT_CHUNK,
    exact: bool = False,
) -> torch.Tensor:
    """Parzen-window log-density of each row of ``x`` (N, D) under an isotropic Gaussian kernel
    of bandwidth ``sigma`` centred on each row of ``samples`` (n, D); float64, shape (N,), on
    the samples' device (the computation runs there: pass CUDA samples to use a GPU).

    ``log p(x) = logsumexp_i log N(x; s_i, sigma^2 I) - log n``. Work is done in blocks of
    ``chunk = (test points, samples)`` (an int means the same for both), so memory stays at
    ~20 bytes per block entry whatever N and n are. ``exact=True`` takes the matrix product in
    float64 instead of float32. A weak measure: see the module docstring (Theis et al. 2016).
    """
    x, samples = _check(x, samples)
    if not float(sigma) > 0:
        raise ConfigError(f"sigma must be positive, got {sigma!r}")
    out = torch.empty(x.shape[0], dtype=torch.float64, device=samples.device)
    n, dim = samples.shape
    for rows, blocks in _sq_dist_blocks(x, samples, chunk, exact):
        out[rows] = _log_kde(blocks, float(sigma), n, dim)
    return out


@torch.no_grad()
def select_bandwidth(
    valid_x: torch.Tensor,
    samples: torch.Tensor,
    sigmas: torch.Tensor | list[float] = DEFAULT_SIGMAS,
    *,
    chunk: int | tuple[int, int] = DEFAULT_CHUNK,
) -> tuple[float, torch.Tensor]:
    """The bandwidth of ``sigmas`` with the highest mean Parzen log-likelihood of ``valid_x``
    (the papers use 1,000 held-out validation images) and the mean score of every sigma (float64,
    same order as ``sigmas``). The distances are computed once and reused for every sigma."""
    sigmas = [float(s) for s in torch.as_tensor(sigmas).reshape(-1)]
    if not sigmas or min(sigmas) <= 0:
        raise ConfigError(f"sigmas must be a non-empty list of positive values, got {sigmas}")
    valid_x, samples = _check(valid_x, samples)
    if valid_x.shape[0] == 0:
        raise ConfigError("bandwidth selection needs at least one validation point")
    n, dim = samples.shape
    totals = torch.zeros(len(sigmas), dtype=torch.float64)
    for _, blocks in _sq_dist_blocks(valid_x, samples, chunk, exact=False):
        for j, s in enumerate(sigmas):
            totals[j] += float(_log_kde(blocks, s, n, dim).sum())
    scores = totals / valid_x.shape[0]
    return sigmas[int(torch.argmax(scores))], scores


def parzen_evaluate(
    x_test: torch.Tensor,
    samples: torch.Tensor,
    valid_x: torch.Tensor,
    sigmas: torch.Tensor | list[float] = DEFAULT_SIGMAS,
    *,
    chunk: int | tuple[int, int] = DEFAULT_CHUNK,
) -> dict:
    """The papers' protocol: choose sigma on ``valid_x``, then score ``x_test``.

    Returns ``dict(mean, se, sigma, sigmas_tried, num_samples)``: the mean Parzen log-likelihood
    over the test points, its standard error ``std / sqrt(N)`` (over test points, for fixed
    samples), the chosen sigma, the grid and the number of samples. Goodfellow et al. use 10,000
    samples and 1,000 validation images. A weak measure: see the module docstring.
    """
    sigma, _ = select_bandwidth(valid_x, samples, sigmas, chunk=chunk)
    ll = parzen_log_likelihood(x_test, samples, sigma, chunk=chunk)
    se = float(ll.std()) / math.sqrt(len(ll)) if len(ll) > 1 else float("nan")
    return {
        "mean": float(ll.mean()),
        "se": float(se),
        "sigma": sigma,
        "sigmas_tried": [float(s) for s in torch.as_tensor(sigmas).reshape(-1)],
        "num_samples": int(samples.shape[0]),
    }


def benchmark(n: int = 10_000, num_test: int = 10_000, root=None) -> dict:
    """Time :func:`parzen_log_likelihood` on ``num_test`` test points x ``n`` samples x 784 dims,
    run the papers' protocol (:func:`parzen_evaluate`, 1,000 validation images) and measure the
    float32-product error against ``exact=True`` (all float64) on 1,000 test points.

    With MNIST in the data root the "samples" are ``n`` real training images and the test and
    validation points real grey-level test and validation images (so the result is the Parzen
    score of the *data* itself); else uniform random images, for the timing only.
    ``python -m ppvae.parzen [ROOT]``.
    """
    torch.set_num_threads(1)
    try:
        from ppvae.sample_quality import mnist_images

        samples = mnist_images("train", root)[:n]
        x = mnist_images("test", root)[:num_test]
        valid = mnist_images("valid", root)[:1000]
        source = "MNIST grey levels (samples: training images)"
    except Exception:  # no data root: the timing does not depend on the values
        g = torch.Generator().manual_seed(0)
        samples, x = torch.rand(n, 784, generator=g), torch.rand(num_test, 784, generator=g)
        valid = torch.rand(1000, 784, generator=g)
        source = "uniform random images"
    out = {"data": source, "shape": f"{len(x)} test x {len(samples)} samples x 784 dims"}
    t0, c0 = time.perf_counter(), time.process_time()
    parzen_log_likelihood(x, samples, 0.2)
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    t0 = time.perf_counter()
    out["protocol"] = parzen_evaluate(x, samples, valid)
    out["protocol_seconds"] = time.perf_counter() - t0
    errors = {}
    for s in (0.1, 0.2, 1.0):
        approx = parzen_log_likelihood(x[:1000], samples, s)
        exact = parzen_log_likelihood(x[:1000], samples, s, exact=True)
        errors[s] = float((approx - exact).abs().max())
    out["max_abs_error_vs_float64_nats"] = errors
    t0 = time.perf_counter()
    parzen_log_likelihood(x[:1000], samples, 0.2, exact=True)
    out["exact_seconds_per_1000_test"] = time.perf_counter() - t0
    return out


if __name__ == "__main__":
    import sys

    for k, v in benchmark(root=sys.argv[1] if len(sys.argv) > 1 else None).items():
        print(f"{k}: {v}")
