"""The plain autoencoder family ``ae``: its ELBO is minus the reconstruction loss (squared error or
cross-entropy), the bound scheme trains it, weight decay shrinks it, it samples from the Gaussian
of its training codes, and importance sampling refuses it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ppvae
from ppvae.analysis import reconstruct
from ppvae.cli import main
from ppvae.errors import ConfigError

SMALL = {"z_dim": 3, "hidden": [16]}


def test_normal_ae_bound_is_minus_scaled_squared_error(digits):
    sigma = 0.5
    model, guide, _ = ppvae.build("ae", digits.x_dim, {**SMALL, "likelihood": "normal", "sigma": sigma}, seed=0)
    x = digits.train[:25]
    rec = model.decoder(guide.net(x))
    D = x.shape[1]
    hand = -((x - rec) ** 2).sum(-1) / (2 * sigma**2) - 0.5 * D * math.log(2 * math.pi * sigma**2)
    for name, k in (("elbo", 1), ("elbo-analytic", 1), ("iwae", 3)):  # a Delta: every particle is the same
        torch.testing.assert_close(ppvae.get_objective(name, k).bound(model, guide, x), hand, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ppvae.get_objective("elbo").loss(model, guide, x, num_data=100), -100 / 25 * hand.sum())


def test_bernoulli_ae_bound_is_minus_cross_entropy(digits):
    model, guide, _ = ppvae.build("ae", digits.x_dim, {**SMALL, "likelihood": "bernoulli"}, seed=0)
    x = digits.train[:25]
    logits = model.decoder(guide.net(x))
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(ppvae.get_objective("elbo").bound(model, guide, x), -bce, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(reconstruct(model, guide, x), torch.sigmoid(logits))


def test_training_lowers_the_reconstruction_error_and_weight_decay_shrinks_the_weights(digits):
    norms, errors = {}, {}
    for wd in (0.0, 30.0):
        model, guide, _ = ppvae.build("ae", digits.x_dim, {**SMALL, "likelihood": "normal"}, seed=0)
        x = digits.test
        before = float(((reconstruct(model, guide, x) - x) ** 2).mean())
        result = ppvae.fit(model, guide, digits, epochs=8, lr=3e-3, weight_decay=wd, progress=False)
        errors[wd] = float(((reconstruct(model, guide, x) - x) ** 2).mean())
        norms[wd] = sum(float((p.detach() ** 2).sum()) for m in (model, guide) for p in m.parameters())
        assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
        assert errors[wd] < before
    assert norms[30.0] < 0.9 * norms[0.0]


def test_code_moments_and_samples(digits):
    """The running moments: a plain average over the first 1/momentum steps, then an EMA; never
    updated without gradients or in eval mode; samples are decoded draws from them."""
    from pyro import poutine

    model, guide, _ = ppvae.build("ae", digits.x_dim, {**SMALL, "code_momentum": 0.25}, seed=0)
    x = digits.train[:20]
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(20, 3, generator=g) * (i + 1) + i for i in range(6)]
    mean, var = torch.zeros(3), torch.ones(3)
    for i, z in enumerate(batches):
        poutine.condition(model, data={"z": z})(x)
        m = max(0.25, 1 / (i + 1))
        mean, var = mean + m * (z.mean(0) - mean), var + m * (z.var(0, unbiased=False) - var)
        torch.testing.assert_close(model.code_mean, mean)
        torch.testing.assert_close(model.code_var, var)
    with torch.no_grad():
        poutine.condition(model, data={"z": batches[0]})(x)
    poutine.condition(model.eval(), data={"z": batches[0]})(x)
    torch.testing.assert_close(model.code_mean, mean)
    draws = model.sample_latents(20000)["z"]
    torch.testing.assert_close(draws.mean(0), mean, atol=0.1 * float(var.max().sqrt()), rtol=0)
    torch.testing.assert_close(draws.var(0), var, rtol=0.05, atol=0)
    out = ppvae.sample(model, 7, digits.x_dim)
    assert out.shape == (7, digits.x_dim) and bool(((out >= 0) & (out <= 1)).all())
    # training updates them once per step
    model.train()
    steps = int(model.code_steps)
    ppvae.fit(model, guide, digits, epochs=2, progress=False)
    assert int(model.code_steps) == steps + 2 * math.ceil(len(digits) / 100)


def test_log_likelihood_is_refused_for_a_deterministic_encoder(digits):
    model, guide, _ = ppvae.build("ae", digits.x_dim, SMALL, seed=0)
    with pytest.raises(ConfigError, match="Delta"):
        ppvae.log_likelihood(model, guide, digits.test[:10], num_samples=5)


def test_bad_options(digits):
    for bad, words in [({"likelihood": "laplace"}, "cross-entropy or squared error"), ({"sigma": 0}, "sigma"),
                       ({"code_momentum": 0}, "code_momentum"), ({"z_dim": 0}, "z_dim")]:
        with pytest.raises(ConfigError, match=words):
            ppvae.build("ae", digits.x_dim, {**SMALL, **bad})


def test_cli_trains_evaluates_and_samples_ae(tmp_path):
    import json

    run = tmp_path / "ae"
    assert main(["train", "--model", "ae", "--dataset", "digits", "--epochs", "2", "--limit", "300",
                 "--set", "hidden=[32]", "--set", "z_dim=2", "--out", str(run), "--no-progress"]) == 0
    for name in ("last.pt", "best.pt", "metrics.jsonl", "training_curves.png", "samples.png"):
        assert (run / name).exists(), name
    # no log p(x) for an autoencoder: evaluate says why and reports what it can
    assert main(["evaluate", str(run), "--limit", "40", "--parzen", "off", "--sample-quality", "off"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["reconstruction_sse"] > 0
    for name in ("reconstructions.png", "latent_scatter.png", "manifold.png"):
        assert (run / name).exists(), name
    assert main(["sample", str(run), "--num", "9", "--out", str(tmp_path / "s.png")]) == 0


def test_density_problem_says_why_log_px_is_unavailable(digits):
    from ppvae.likelihood import density_problem

    model, guide, _ = ppvae.build("ae", digits.x_dim, SMALL, seed=0)
    assert "Delta" in density_problem(model, guide, digits.test[:5])
    vae, enc, _ = ppvae.build("vae", digits.x_dim, {"z_dims": [2], "hidden": [[8]]}, seed=0)
    state = torch.get_rng_state()
    assert density_problem(vae, enc, digits.test[:5]) is None
    assert torch.equal(state, torch.get_rng_state())  # no random numbers consumed
