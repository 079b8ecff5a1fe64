"""Importance-sampled marginal likelihood, one estimate per datapoint.

    log p(x_i) ~= log (1/S) sum_s p(x_i, z_s) / q(z_s | x_i),     z_s ~ q(z | x_i)

with the guide as proposal (Burda et al. 2016, section 5; S = 5000 in the papers). Pyro's own
``Importance`` loops over samples in Python and returns the *joint* normalizer of the whole batch,
and ``vectorized_importance_weights``/``psis_diagnostic`` sum over the data plate (DESIGN fact 1);
here the guide is traced under a particle plate, each datapoint keeps its own log-weights, and a
running logsumexp over chunks of samples keeps memory bounded for any S.

**Pairs with global latents** (sites outside the data plate, e.g. Bayesian decoder weights w with a
guide q(w)): each sample s draws its own w_s ~ q(w), shared by the datapoints of its trace, and
only the local terms enter the weights::

    log p(x_i) ~= log (1/S) sum_s p(x_i, z_s | w_s) / q(z_s | x_i, w_s),     w_s ~ q(w), z_s ~ q(z | x_i, w_s)

a consistent estimate (and, like every importance-sampling estimate, a stochastic lower bound) of
log E_q(w)[p(x_i | w)]: the density of x_i under the **posterior predictive** of the trained
model, which is what a Bayesian model predicts for a new datapoint and what a test set scores.
log p(w) - log q(w) is left out: with it the estimate would be of the prior predictive
log E_p(w)[p(x_i | w)], which ignores training altogether. Sharing w_s across a trace's
datapoints correlates their estimates (it does not bias any of them); the number of w draws per
trace is capped (:data:`GLOBAL_ELEMENTS`) so that memory stays bounded.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from ppvae import distributed as pdist
from ppvae.errors import ConfigError, DataError
from ppvae.nn import evaluates
from ppvae.traces import probe_pair, trace_pair

#: particles x datapoints scored in one trace; bounds memory (the decoder's output for this many
#: samples, 5000 x 784 floats = 16 MB) whatever num_samples and N are. Measured best on the CPU
#: (benchmarks/README.md): 5000 ran at 1.5x the throughput of 40,000, whose 125 MB temporaries
#: exceed glibc's mmap threshold and page-fault afresh for every chunk.
CHUNK_ELEMENTS = 5_000
#: numbers the global latents of one trace's particles may hold in all (each particle draws its own
#: w): 4e6 floats = 16 MB, e.g. 19 draws of the 207k weights of a 50-200-200-784 Bayesian decoder,
#: each then shared by 263 datapoints. Few draws shared widely is also the fast way: drawing w
#: costs as much as decoding ~1 datapoint, and a few large batched matmuls run faster than many
#: small ones. With the global densities left unscored (``score_globals=False``), that decoder's
#: log p(x) cost 23 us per datapoint-sample on one CPU thread (the same-size point-estimate VAE:
#: 16 us), against 160 us with 96 draws shared by 52 datapoints and the densities scored.
GLOBAL_ELEMENTS = 4_000_000


@dataclass
class ImportanceResult:
    """Per-datapoint results of importance sampling, each of shape (N,)."""

    log_px: torch.Tensor  # log p(x_i) estimates
    pareto_k: torch.Tensor  # PSIS Pareto-k of each datapoint's weights (> 0.7: unreliable estimate)
    ess: torch.Tensor  # effective sample size of each datapoint's normalized weights


@evaluates
def log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *args,
    num_samples: int = 5000,
    batch_size: int | None = None,
    chunk_elements: int | None = None,
    diagnostics: bool = False,
    seed: int | None = None,
    **kwargs,
) -> torch.Tensor | ImportanceResult:
    """Importance-sampled estimate of log p(x_i) for each row of ``x``: a tensor of shape (N,).

    Works for any model/guide pair following ppvae's convention (local latents and ``"x"`` inside
    ``pyro.plate("data", ...)``), ``pyro.factor`` sites included. Computed on ``x``'s device, in
    chunks of at most ``chunk_elements`` samples x datapoints (default: the model's
    ``eval_chunk_elements`` attribute if it has one, for a model whose cost per sample is far from a
    decoder pass's, else ``CHUNK_ELEMENTS``). With ``diagnostics=True`` returns an
    :class:`ImportanceResult` that adds each datapoint's Pareto-k (``arviz.psislw``) and ESS.

    ``seed`` ties the random draws to the datapoints: each batch of ``batch_size`` rows draws from
    its own generator state, ``seed`` plus the batch's first row index (torch's global generator is
    left as it was), so the estimates do not depend on how the work is split. Inside a
    ``torch.distributed`` process group the batches are dealt out to the ranks round-robin and the
    per-datapoint results gathered in order on every rank; there ``seed`` defaults to 0, so the
    same call on 1 and on N processes gives identical per-datapoint values.

    Pyro handlers in the pair: a masked term contributes 0, so masked dimensions of ``x``
    (``poutine.mask``, ``obs_mask``, ``Distribution.mask``) are *marginalized*: the estimate is
    log p(observed dims of x_i), and a datapoint whose ``"x"`` is masked out entirely gets
    log E_q[p(z) / q(z | x)], an estimate of log 1 = 0 for a normalized prior. A ``pyro.factor`` in
    the guide is part of log q (the density the guide's samples have, e.g. a Jacobian correction),
    as in Pyro's ELBOs. A ``poutine.scale`` shared by every site of a datapoint, model and guide
    alike, weights that datapoint in a loss and does not change its density: it is ignored here.
    A scale on some sites only (a tempered likelihood) leaves no normalized model whose log p(x)
    could be estimated: ``ConfigError`` naming the site.

    With global latents (Bayesian weights), the estimate is of log E_q(w)[p(x_i | w)], the
    posterior predictive (module docstring); the default ``batch_size`` then lets each trace's
    draws of w serve as many datapoints as the chunk allows.
    """
    if chunk_elements is None:
        chunk_elements = int(getattr(model, "eval_chunk_elements", CHUNK_ELEMENTS))
    _check_args(x, num_samples, chunk_elements)
    n = x.shape[0]
    if batch_size is None:
        batch_size = max(1, min(n, chunk_elements // min(num_samples, chunk_elements)))
        with pyro.validation_enabled(False):  # as the traces below: bad data is reported after them
            glob = probe_pair(model, guide, x[:batch_size], args, kwargs).global_elements  # cached per pair
        if glob:
            # Each particle draws its own global latents: few particles per trace, shared by many
            # datapoints, keep their memory bounded (one particle per datapoint would hold
            # num_samples copies of w).
            k = max(1, min(num_samples, chunk_elements, GLOBAL_ELEMENTS // glob))
            batch_size = max(1, min(n, chunk_elements // k))
    # enough particles per trace to fill the chunk, never more than asked for
    particles = max(1, min(num_samples, chunk_elements // batch_size))
    log_px = torch.empty(n, device=x.device)
    k_hat = np.empty(n) if diagnostics else None
    ess = np.empty(n) if diagnostics else None
    rank, world = pdist.world()
    if seed is None and world > 1:
        seed = 0
    starts = list(range(0, n, batch_size))[rank::world]  # this rank's batches (all of them on one process)
    with torch.no_grad(), pyro.validation_enabled(False):
        for start in starts:
            xb = x[start : start + batch_size]
            with _draws_tied_to(seed, start, x.device):
                chunks = []
                running = None
                for s0 in range(0, num_samples, particles):
                    k = min(particles, num_samples - s0)
                    try:
                        tr = trace_pair(model, guide, xb, *args, num_particles=k, score_globals=False, **kwargs)
                    except NotImplementedError as e:  # a prior or decoder without a density
                        raise ConfigError(f"log p(x) cannot be estimated for this pair: {e}") from e
                    if running is None:
                        _check_proposal(tr)
                    tr.datapoint_scale("log_likelihood")  # raises for scales on some sites only
                    log_w = tr.log_weights()  # (k, b): masked, without the pair's scales
                    if diagnostics:
                        chunks.append(log_w.cpu())
                    lse = torch.logsumexp(log_w, 0)
                    running = lse if running is None else torch.logaddexp(running, lse)
                log_px[start : start + xb.shape[0]] = running - math.log(num_samples)
                if diagnostics:
                    lw = torch.cat(chunks, 0).T.double().numpy()  # (b, S): samples on the last axis
                    k_hat[start : start + xb.shape[0]] = pareto_k(lw)
                    w = np.exp(lw - lw.max(1, keepdims=True))
                    w /= w.sum(1, keepdims=True)
                    ess[start : start + xb.shape[0]] = 1.0 / (w**2).sum(1)
    if world > 1:
        log_px, k_hat, ess = _gather_batches(starts, batch_size, log_px, k_hat, ess)
    if not torch.isfinite(log_px).all():
        bad = int((~torch.isfinite(log_px)).nonzero()[0])
        raise DataError(
            f"log p(x) is not finite for datapoint {bad}: the data may lie outside the model's "
            "support (e.g. non-binary pixels under a Bernoulli decoder) or the model has diverged"
        )
    if not diagnostics:
        return log_px
    return ImportanceResult(log_px, torch.from_numpy(k_hat).float(), torch.from_numpy(ess).float())


def _draws_tied_to(seed: int | None, start: int, device: torch.device):
    """A context in which torch's generator is seeded for the batch starting at row ``start``,
    restored afterwards; a no-op without a seed."""
    if seed is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []))
    torch.manual_seed(int(seed) + int(start))
    return stack


def _gather_batches(starts, batch_size, log_px, k_hat, ess):
    """Every rank's batches, put in row order on every rank."""
    mine = {s: (log_px[s : s + batch_size].cpu(), None if k_hat is None else k_hat[s : s + batch_size],
                None if ess is None else ess[s : s + batch_size]) for s in starts}
    for part in pdist.gather(mine):
        for s, (lp, k, e) in part.items():
            log_px[s : s + lp.shape[0]] = lp.to(log_px.device)
            if k_hat is not None:
                k_hat[s : s + lp.shape[0]] = k
                ess[s : s + lp.shape[0]] = e
    return log_px, k_hat, ess


def pareto_k(log_weights: np.ndarray) -> np.ndarray:
    """PSIS Pareto-k per row (Vehtari et al. 2015), via arviz."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz's refactor FutureWarning and small-sample warnings
        import arviz

        _, k = arviz.psislw(log_weights)
    k = np.asarray(k, dtype=float).reshape(log_weights.shape[0])
    # Constant weights (the guide is the exact posterior) have no tail to fit and arviz returns
    # inf; such an estimate is exact, so report k = 0 rather than flag it as unreliable.
    flat = np.ptp(log_weights, axis=1) < 1e-6
    k[flat] = 0.0
    return k


@torch.no_grad()
def density_problem(model: Callable, guide: Callable, x: torch.Tensor, *args, **kwargs) -> str | None:
    """Why ``log_likelihood`` cannot estimate log p(x) for this pair (a guide site without a
    density, such as the Delta encoder of the ``ae`` family; a model site without one), or None
    when it can: one trace of the pair on ``x``, for callers that report what they can instead of
    failing (an evaluation report with reconstruction error but no log p(x))."""
    with pyro.validation_enabled(False), torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
        try:
            tr = trace_pair(model, guide, x, *args, num_particles=1, **kwargs)
            _check_proposal(tr)
            tr.log_weights()
        except NotImplementedError as e:  # a distribution without log_prob
            return f"log p(x) cannot be estimated for this pair: {e}"
        except ConfigError as e:
            return str(e)
    return None


def _check_proposal(tr) -> None:
    """Importance sampling needs a guide with a density: a Delta (a deterministic encoder) gives
    weights that are not p(x, z) / q(z | x), so its "estimate" would be meaningless."""
    for name, site in tr.guide_sites.items():
        fn = site.fn
        while hasattr(fn, "base_dist"):
            fn = fn.base_dist
        if isinstance(fn, dist.Delta):
            raise ConfigError(
                f"guide site {name!r} is a Delta (a deterministic encoder): it has no density, so it cannot "
                "be the proposal of importance sampling. Use a Gaussian encoder (e.g. --set encoder=gaussian "
                "for the aae family), or evaluate with the Parzen window (ppvae.parzen)"
            )


def _check_args(x, num_samples, chunk_elements) -> None:
    if not isinstance(x, torch.Tensor):
        raise DataError(f"x must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise DataError(f"x must have shape (N, D) with N >= 1, got {tuple(x.shape)}")
    if int(num_samples) < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples!r}")
    if int(chunk_elements) < 1:
        raise ConfigError(f"chunk_elements must be >= 1, got {chunk_elements!r}")
