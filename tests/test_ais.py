"""Annealed importance sampling (``ppvae.ais``) against closed-form normalizers.

The known answer. For T(z) = -1/2 z^T A z + b^T z + c with I + A positive definite,

    Z = int N(z; 0, I) exp T(z) dz
      = (2 pi)^(-d/2) int exp(-1/2 z^T (I + A) z + b^T z + c) dz
      = (2 pi)^(-d/2) exp(c) (2 pi)^(d/2) det(I + A)^(-1/2) exp(1/2 b^T (I + A)^(-1) b)

(complete the square around mu = (I + A)^(-1) b), so

    log Z = c - 1/2 log det(I + A) + 1/2 b^T (I + A)^(-1) b,

and the normalized tilted density is the Gaussian N(mu, (I + A)^(-1)). Setting A = (1/s^2 - 1) I,
b = mu / s^2 and c = -(the rest) gives T = log N(z; mu, s^2 I) / N(z; 0, I) with log Z = 0: a narrow
Gaussian far from N(0, I), the hard case where plain importance sampling fails.
"""

from __future__ import annotations

import math

import pytest
import torch

from ppvae.ais import ais_log_normalizer, schedule
from ppvae.errors import ConfigError
from ppvae.models.iop import IOPConfig, IOPVAE


def quadratic(A: torch.Tensor, b: torch.Tensor, c: float):
    """T(z) = -1/2 z^T A z + b^T z + c and its exact log Z (module docstring)."""
    precision = torch.eye(b.numel(), dtype=torch.float64) + A.double()
    log_z = c - 0.5 * torch.logdet(precision) + 0.5 * b.double() @ torch.linalg.solve(precision, b.double())

    def T(z: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((z @ A) * z).sum(-1) + z @ b + c

    return T, float(log_z)


def random_quadratic(d: int = 10, seed: int = 0):
    """A correlated tilt: the target N(mu, (I + A)^-1) has variances ~0.25-1 and |mu| ~ 2."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g) / math.sqrt(d)
    return quadratic(3.0 * m @ m.T, 1.5 * torch.randn(d, generator=g), 0.7)


def gaussian_ratio(mu: torch.Tensor, s: float):
    """T = log N(z; mu, s^2 I) / N(z; 0, I): log Z = 0 (module docstring)."""
    d = mu.numel()
    A = (1.0 / s**2 - 1.0) * torch.eye(d)
    b = mu / s**2
    c = 0.5 * d * math.log(1.0 / s**2) - 0.5 * float(mu @ mu) / s**2  # cancels the other two terms
    return quadratic(A, b, c)


def test_known_answer_of_a_quadratic_tilt():
    T, truth = random_quadratic()
    assert abs(truth) > 1.0  # a sign error in the weights could not pass unnoticed
    torch.manual_seed(0)
    r = ais_log_normalizer(T, 10, temperatures=100, chains=100, repeats=10, leapfrog_steps=5)
    assert r.log_weights.shape == (10, 100) and r.log_z_repeats.shape == (10,)
    assert 0.0 < r.se < 0.1
    assert abs(r.log_z - truth) < 4 * r.se
    # each repeat is a stochastic lower bound: their mean must not sit above the truth
    assert float(r.log_z_repeats.mean()) < truth + 2 * r.se
    assert r.pareto_k < 0.7 and r.ess > 100
    assert r.acceptance.shape == (99,) and 0.4 < float(r.acceptance.mean()) < 0.9
    assert r.betas[0] == 0 and r.betas[-1] == 1 and bool((r.betas.diff() > 0).all())


def test_one_temperature_is_importance_sampling_from_the_base():
    T, _ = random_quadratic()
    torch.manual_seed(3)
    r = ais_log_normalizer(T, 10, temperatures=1, chains=400, repeats=1)
    torch.manual_seed(3)
    t = T(torch.randn(400, 10)).double()
    torch.testing.assert_close(r.log_weights[0], t)
    assert r.log_z == pytest.approx(float(torch.logsumexp(t, 0) - math.log(400)), abs=1e-12)
    assert r.acceptance.numel() == 0 and math.isnan(r.se)


def test_more_temperatures_reduce_the_variance_on_a_separated_target():
    T, truth = gaussian_ratio(torch.tensor([2.0, 0.0, 0.0, 0.0]), 0.2)
    assert truth == pytest.approx(0.0, abs=1e-9)
    runs = {}
    for temperatures in (1, 10, 200):
        torch.manual_seed(0)
        runs[temperatures] = ais_log_normalizer(T, 4, temperatures=temperatures, chains=50, repeats=8, leapfrog_steps=5)
    std = {t: r.repeat_std for t, r in runs.items()}
    assert std[1] > 3 * std[10] and std[10] > 3 * std[200]
    # plain importance sampling is far below the truth and its Pareto-k says so; AIS is not
    assert runs[1].log_z < -1.0 and runs[1].pareto_k > 0.7
    assert abs(runs[200].log_z - truth) < 4 * runs[200].se and runs[200].pareto_k < 0.7


def test_schedules_run_from_zero_to_one():
    for kind in ("sigmoid", "linear", "geometric"):
        betas = schedule(50, kind)
        assert betas.shape == (51,) and betas[0] == 0 and betas[-1] == pytest.approx(1.0)
        assert bool((betas.diff() > 0).all())
    assert schedule(1, "geometric").tolist() == [0.0, 1.0]
    s = schedule(100, "sigmoid").diff()
    assert s[0] < s[50] and s[-1] < s[50]  # small steps at both ends


@pytest.mark.parametrize("bad, match", [
    (dict(temperatures=0), "temperatures must be a positive integer"),
    (dict(temperatures=2.5), "temperatures must be a positive integer"),
    (dict(chains=-1), "chains must be a positive integer"),
    (dict(repeats=0), "repeats must be a positive integer"),
    (dict(leapfrog_steps=0), "leapfrog_steps must be a positive integer"),
    (dict(transitions=0), "transitions must be a positive integer"),
    (dict(step_size=0.0), "step_size must be a positive number"),
    (dict(step_size=float("nan")), "step_size must be a positive number"),
    (dict(target_acceptance=1.0), "target_acceptance must lie strictly between 0 and 1"),
    (dict(schedule_kind="cosine"), "unknown AIS schedule 'cosine'"),
])
def test_bad_settings_raise_config_errors(bad, match):
    T, _ = random_quadratic(3)
    with pytest.raises(ConfigError, match=match):
        ais_log_normalizer(T, 3, **bad)


# --- the implicit optimal prior ----------------------------------------------------------------


class QuadraticRatio(torch.nn.Module):
    """A density-ratio network stand-in computing a quadratic T (with a dropout layer that would
    make T random if AIS left the module in train mode)."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, z, *, dropout=False):
        return self.T(self.drop(z))


def small_iop() -> IOPVAE:
    torch.manual_seed(0)
    return IOPVAE(16, IOPConfig(z_dims=(4,), hidden=((8,),), ratio_hidden=(8,)))


def test_iop_ais_with_one_temperature_equals_its_importance_sampling():
    model = small_iop()
    torch.manual_seed(5)
    r = model.log_normalizer_ais(temperatures=1, chains=300, repeats=1)
    torch.manual_seed(5)
    assert r.log_z == pytest.approx(model.log_normalizer(300), abs=1e-5)


def test_iop_ais_normalizes_a_separated_prior_with_t_in_eval_mode():
    model = small_iop()
    T, truth = gaussian_ratio(torch.tensor([1.5, -1.5, 0.0, 0.0]), 0.15)
    model.log_ratio = QuadraticRatio(T).eval()
    torch.manual_seed(0)
    naive, k_naive, _ = model.log_normalizer(4000, diagnostics=True)
    assert naive < truth - 1.0 and k_naive > 0.7
    model.train()  # dropout on: AIS must switch it off (the estimate below would be off by nats)
    torch.manual_seed(0)
    r = model.log_normalizer_ais(temperatures=200, chains=50, repeats=6, leapfrog_steps=5)
    assert abs(r.log_z - truth) < max(4 * r.se, 0.05) and r.pareto_k < 0.7
    assert model.log_ratio.training  # the module's mode is restored
