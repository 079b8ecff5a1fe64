"""User-written model/guide pairs: ``pyro.factor`` sites, plain functions with ``pyro.param`` /
``pyro.module``, and the errors a malformed pair gets."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import nn

import ppvae
from ppvae.errors import ConfigError

# --- 8. a pyro.factor site inside the data plate ---------------------------------------------
#
#   z ~ N(0, I_2),  x ~ N(z, I_2),  plus pyro.factor("tilt", a . z)
#
# The unnormalized joint N(z; 0, I) N(x; z, I) exp(a . z) integrates to
#   Z(x) = N(x; 0, 2 I) exp(a . x / 2 + |a|^2 / 4),
# and the tilted posterior is N(x / 2 + a / 2, I / 2).

TILT = torch.tensor([0.7, -1.3])


def factor_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), x.new_ones(2)).to_event(1))
        pyro.factor("tilt", z @ TILT)
        pyro.sample("x", dist.Normal(z, x.new_ones(2)).to_event(1), obs=x)


def tilted_posterior_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 2 + TILT / 2, x.new_full((2,), math.sqrt(0.5))).to_event(1))


def untilted_posterior_guide(x):
    """A reasonable proposal that ignores the factor: the posterior without it, widened."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 2, x.new_full((2,), 1.2 * math.sqrt(0.5))).to_event(1))


def log_normalizer(x):
    base = dist.Normal(torch.zeros(2), math.sqrt(2.0)).to_event(1).log_prob(x)
    return base + x @ TILT / 2 + (TILT @ TILT) / 4


@pytest.fixture
def factor_data():
    return torch.randn(30, 2, generator=torch.Generator().manual_seed(0)) * 1.5


def test_log_likelihood_includes_the_factor(factor_data):
    x = factor_data
    exact = log_normalizer(x)
    est = ppvae.log_likelihood(factor_model, tilted_posterior_guide, x, num_samples=1)
    torch.testing.assert_close(est, exact, atol=1e-4, rtol=0)
    torch.manual_seed(0)
    est = ppvae.log_likelihood(factor_model, untilted_posterior_guide, x, num_samples=5000)
    assert (est - exact).abs().max() < 0.05
    # the factor matters here: without it log p(x) would be off by a . x / 2 + |a|^2 / 4
    assert (x @ TILT / 2 + (TILT @ TILT) / 4).abs().mean() > 0.5


def test_objectives_include_the_factor(factor_data):
    x = factor_data
    exact = log_normalizer(x)
    for name in ("elbo", "iwae"):  # exact posterior: every weight is Z(x), so every bound is too
        torch.testing.assert_close(ppvae.get_objective(name, 3).bound(factor_model, tilted_posterior_guide, x), exact, atol=1e-4, rtol=0)
    # elbo-analytic: analytic KL to the prior, the factor stays Monte Carlo: equal in expectation
    torch.manual_seed(0)
    est = ppvae.get_objective("elbo-analytic", 4000).bound(factor_model, tilted_posterior_guide, x)
    assert (est - exact).abs().max() < 0.08  # about 4 standard errors


# --- 9. plain Python functions with pyro.param / pyro.module ---------------------------------


def make_plain_pair(x_dim: int = 4, z_dim: int = 2):
    """Probabilistic PCA written the Pyro-tutorial way: functions, parameters in the param store."""
    encoder = nn.Linear(x_dim, 2 * z_dim)

    def model(x):
        W = pyro.param("W", lambda: 0.1 * torch.randn(x_dim, z_dim))
        b = pyro.param("b", lambda: torch.zeros(x_dim))
        sigma = pyro.param("sigma", lambda: torch.ones(()), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), x.new_ones(z_dim)).to_event(1))
            loc = z @ W.T + b
            pyro.sample("x", dist.Normal(loc, sigma.expand(loc.shape)).to_event(1), obs=x)

    def guide(x):
        net = pyro.module("encoder", encoder)
        loc, raw = net(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-3).to_event(1))

    return model, guide, encoder


def exact_marginal_from_store() -> dist.MultivariateNormal:
    store = pyro.get_param_store()
    W, b, sigma = (store[n].detach().double() for n in ("W", "b", "sigma"))
    return dist.MultivariateNormal(b, covariance_matrix=W @ W.T + sigma**2 * torch.eye(W.shape[0], dtype=W.dtype))


@pytest.fixture
def ppca_data():
    g = torch.Generator().manual_seed(0)
    W = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.5], [0.5, 0.5]])
    z = torch.randn(400, 2, generator=g)
    return z @ W.T + torch.tensor([1.0, -1.0, 0.5, 2.0]) + 0.3 * torch.randn(400, 4, generator=g)


def test_plain_function_pair_trains_and_evaluates(ppca_data):
    x = ppca_data
    model, guide, encoder = make_plain_pair()
    torch.manual_seed(0)
    guide(x[:2]), model(x[:2])  # create the params so their initial values can be recorded
    store = pyro.get_param_store()
    before = {n: store[n].detach().clone() for n in store.keys()}
    assert {"W", "b", "sigma", "encoder$$$weight", "encoder$$$bias"} <= set(before)
    exact_before = exact_marginal_from_store().log_prob(x.double()).mean()

    result = ppvae.fit(model, guide, x, objective="elbo-analytic", epochs=8, batch_size=100, lr=0.05, progress=False)
    assert len(result.history) == 8
    for name, value in before.items():
        assert not torch.equal(store[name].detach(), value), f"param {name!r} did not move"
    assert torch.equal(encoder.weight.detach(), store["encoder$$$weight"].detach())  # the module is the param
    exact_after = exact_marginal_from_store().log_prob(x.double())
    assert exact_after.mean() > exact_before + 1.0  # training raised the true likelihood

    torch.manual_seed(1)
    est = ppvae.log_likelihood(model, guide, x[:40], num_samples=2000)
    assert est.shape == (40,)
    assert (est.double() - exact_after[:40]).abs().max() < 0.05


# --- 10. malformed pairs ----------------------------------------------------------------------


def ok_guide(x):
    loc = pyro.param("q_loc", lambda: torch.zeros(2))  # something for fit to train
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, x.new_ones(2)).to_event(1))


def paramless_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.new_zeros(2), x.new_ones(2)).to_event(1))


def ok_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), x.new_ones(2)).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(z.shape[:-1] + (x.shape[1],)), 1.0).to_event(1), obs=x)


def model_with_extra_latent(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), x.new_ones(2)).to_event(1))
        u = pyro.sample("u", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
        pyro.sample("x", dist.Normal((z.sum(-1, keepdim=True) + u).expand(z.shape[:-1] + (x.shape[1],)), 1.0).to_event(1), obs=x)


def guide_with_extra_latent(x):
    loc = pyro.param("q_loc", lambda: torch.zeros(2))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, x.new_ones(2)).to_event(1))
        pyro.sample("v", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))


def model_with_global(x):
    """A global latent w (outside the plate, shared by every datapoint) is fine: see
    tests/test_global_latents.py. An observation outside the plate is not."""
    w = pyro.sample("w", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(w.expand(w.shape[:-1] + x.shape[-1:]), 1.0).to_event(1), obs=x)


def guide_with_global(x):
    loc = pyro.param("w_loc", lambda: torch.zeros(1))  # not "q_loc": ok_guide's is (2,), same store
    pyro.sample("w", dist.Normal(loc, x.new_ones(1)).to_event(1))


def model_observing_outside_the_plate(x):
    w = pyro.sample("w", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
    pyro.sample("x", dist.Normal(w.expand(w.shape[:-1] + x.shape), 1.0).to_event(2), obs=x)


def model_without_to_event(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), x.new_ones(2)).to_event(1))
        loc = z.sum(-1, keepdim=True).expand(z.shape[:-1] + (x.shape[1],))
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)  # forgot .to_event(1)


def guide_without_to_event(x):
    loc = pyro.param("q_loc", lambda: torch.zeros(2))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, x.new_ones(2)))  # forgot .to_event(1)


def evaluators():
    """Every entry point that reads a pair."""
    return {
        "log_likelihood": lambda m, g, x: ppvae.log_likelihood(m, g, x, num_samples=4),
        "log_likelihood_1": lambda m, g, x: ppvae.log_likelihood(m, g, x, num_samples=1),
        "elbo": lambda m, g, x: ppvae.get_objective("elbo").loss(m, g, x),
        "iwae": lambda m, g, x: ppvae.get_objective("iwae", 3).loss(m, g, x),
        "fit": lambda m, g, x: ppvae.fit(m, g, x, epochs=1, progress=False),
    }


BAD_PAIRS = {
    "latent missing from guide": (model_with_extra_latent, ok_guide, r"\['u'\] but the guide does not"),
    "extra guide latent": (ok_model, guide_with_extra_latent, r"the guide samples \['v'\]"),
    "observation outside the data plate": (model_observing_outside_the_plate, guide_with_global, r"'x' is outside pyro.plate\('data'"),
    "x without to_event": (model_without_to_event, ok_guide, r"to_event"),
    "z without to_event": (ok_model, guide_without_to_event, r"to_event"),
}


@pytest.mark.parametrize("entry", list(evaluators()))
@pytest.mark.parametrize("case", list(BAD_PAIRS))
def test_bad_pairs_raise_config_error(case, entry):
    model, guide, match = BAD_PAIRS[case]
    for n in (5, 3):  # 3 == D: the shape of a missing .to_event looks like a particle dim
        x = torch.randn(n, 3)
        with pytest.raises(ConfigError, match=match):
            evaluators()[entry](model, guide, x)


def test_the_good_pair_passes_every_entry_point():
    """The control for the test above: the same entry points accept a well-formed pair, with or
    without a global latent outside the data plate."""
    for n in (5, 3):
        x = torch.randn(n, 3)
        for fn in evaluators().values():
            fn(ok_model, ok_guide, x)
            fn(model_with_global, guide_with_global, x)


def test_bad_training_settings_raise_config_error():
    x = torch.randn(20, 3)
    with pytest.raises(ConfigError, match="known: elbo, elbo-analytic, iwae"):
        ppvae.fit(ok_model, ok_guide, x, objective="wake-sleep", progress=False)
    with pytest.raises(ConfigError, match="num_particles must be a positive integer"):
        ppvae.fit(ok_model, ok_guide, x, num_particles=0, progress=False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        ppvae.fit(ok_model, paramless_guide, x, epochs=1, progress=False)
