"""Adversarial autoencoders: the discriminator's optimum, the priors' laws, every network training,
any pair trained adversarially, likelihood only where the guide has a density, and bit-identical
resume of the ``aae`` scheme."""

from __future__ import annotations

import math

import pytest
import torch

import ppvae
import ppvae.checkpoint as checkpoint
from ppvae.errors import ConfigError
from ppvae.nn import mlp
from ppvae.priors import CircleMixture, SwissRoll
from ppvae.schemes import AdversarialScheme
from ppvae.schemes.adversarial import discriminator_loss, generator_loss

SMALL = {"hidden": [32, 32]}


def test_the_discriminator_reaches_the_optimal_d_on_two_gaussians():
    """Prior draws (real) ~ p = N(0, 1), codes (fake) ~ q = N(1, 0.5^2): the minimizer of the
    discriminator loss is D*(z) = p(z) / (p(z) + q(z)) (Goodfellow et al. 2014, Prop. 1)."""
    torch.manual_seed(0)
    D = mlp(1, (32, 32), 1, "tanh")
    opt = torch.optim.Adam(D.parameters(), lr=3e-3)
    for step in range(1500):
        if step == 1000:
            opt.param_groups[0]["lr"] = 3e-4
        real, fake = torch.randn(512, 1), 1.0 + 0.5 * torch.randn(512, 1)
        loss = discriminator_loss(D(real).squeeze(-1), D(fake).squeeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = torch.linspace(-1.0, 2.0, 31).unsqueeze(-1)
    p, q = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(1.0, 0.5)
    optimal = torch.sigmoid(p.log_prob(z) - q.log_prob(z)).squeeze(-1)
    with torch.no_grad():
        learned = torch.sigmoid(D(z)).squeeze(-1)
    assert (learned - optimal).abs().max() < 0.08, (learned - optimal).abs().max()
    # the target is far from constant: swapping real and fake would miss by much more
    assert (optimal - (1 - optimal)).abs().mean() > 0.3


def test_generator_losses_equal_their_formulas():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    d = torch.sigmoid(logits)
    torch.testing.assert_close(generator_loss(logits), -d.log().mean())
    torch.testing.assert_close(generator_loss(logits, "minimax"), (1 - d).log().mean())
    torch.testing.assert_close(discriminator_loss(logits, -logits), -(d.log().mean() + (1 - torch.sigmoid(-logits)).log().mean()))


def test_the_mixture_prior_samples_and_scores_what_it_claims():
    torch.manual_seed(0)
    prior = CircleMixture(10, radius=1.4, radial_std=0.5, tangential_std=0.05)
    for k in (0, 3, 7):
        z = prior.given(torch.full((40_000,), k)).sample()
        angle = 2 * math.pi * k / 10
        radial = torch.tensor([math.cos(angle), math.sin(angle)])
        tangential = torch.tensor([-math.sin(angle), math.cos(angle)])
        along, across = z @ radial, z @ tangential
        assert along.mean() == pytest.approx(1.4, abs=0.01) and along.std() == pytest.approx(0.5, abs=0.01)
        assert across.mean() == pytest.approx(0.0, abs=0.002) and across.std() == pytest.approx(0.05, abs=0.002)
        # sample_given and given(y).sample draw the same law
        zz = prior.sample_given(torch.full((40_000,), k))
        assert (zz @ radial).mean() == pytest.approx(1.4, abs=0.01)
    z = prior.sample((50_000,))
    sector = torch.round(torch.atan2(z[:, 1], z[:, 0]) / (2 * math.pi / 10)) % 10
    counts = torch.bincount(sector.long(), minlength=10).float() / z.shape[0]
    assert (counts - 0.1).abs().max() < 0.02  # equal weights
    # log_prob is the equal-weight mixture of the components' Gaussian densities
    point = torch.tensor([[0.3, -1.1], [1.5, 0.1]])
    comps = [prior.given(torch.tensor(k)).log_prob(point) for k in range(10)]
    torch.testing.assert_close(prior.log_prob(point), torch.logsumexp(torch.stack(comps), 0) - math.log(10))


def test_the_swiss_roll_prior_follows_its_radius_and_angle_law():
    torch.manual_seed(0)
    roll = SwissRoll(10)
    z = roll.sample((50_000,))
    r = z.norm(dim=-1)
    u = (r / 3) ** 2  # r = 3 sqrt(u), u ~ U(0, 1)
    assert u.mean() == pytest.approx(0.5, abs=0.01) and u.var() == pytest.approx(1 / 12, abs=0.005)
    angle = 4 * math.pi * (r / 3)  # the angle is 4 pi sqrt(u)
    torch.testing.assert_close(z, torch.stack([r * angle.cos(), r * angle.sin()], -1), atol=1e-4, rtol=0)
    for k in (0, 4, 9):  # a supervised draw lands in its label's segment
        u = (roll.given(torch.full((5000,), k)).sample().norm(dim=-1) / 3) ** 2
        assert u.min() >= k / 10 - 1e-5 and u.max() <= (k + 1) / 10 + 1e-5
    with pytest.raises(NotImplementedError, match="no density"):
        roll.log_prob(z[:2])


def named(*modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


@pytest.mark.parametrize("options", [
    {"encoder": "deterministic"},
    {"encoder": "gaussian", "likelihood": "bernoulli"},
    {"z_dim": 2, "prior": "mixture", "conditional": "discriminator"},
    {"z_dim": 2, "prior": "swiss-roll", "conditional": "decoder"},
])
def test_every_network_trains(digits, options):
    model, guide, _ = ppvae.build("aae", digits.x_dim, {**SMALL, **options}, seed=0)
    extra = 10 if options.get("conditional") == "discriminator" else 0  # the one-hot label
    D = mlp(options.get("z_dim", 8) + extra, (32,), 1, "relu")
    before = named(model, guide, D)
    result = ppvae.fit(model, guide, digits, scheme=AdversarialScheme(D), epochs=1, batch_size=50, progress=False)
    after = named(model, guide, D)
    assert not [n for n in before if torch.equal(before[n], after[n])]
    last = result.history[-1]
    assert {"reconstruction_loss", "discriminator_loss", "generator_loss", "discriminator_accuracy",
            "valid_reconstruction", "discriminator_lr", "generator_lr"} <= set(last)


def test_a_users_own_vae_pair_trains_adversarially(digits):
    """scheme="aae" over ppvae's plain VAE pair: the discriminator is built from its latent size."""
    model, guide, _ = ppvae.build("vae", digits.x_dim, {"z_dims": [3], "hidden": [[32]]}, seed=0)
    scheme = AdversarialScheme(hidden=(16,), generator_loss="minimax", discriminator_steps=2)
    enc_before, dec_before = named(guide), named(model)
    result = ppvae.fit(model, guide, digits, scheme=scheme, epochs=1, progress=False)
    assert scheme.site == "z" and scheme.discriminator[0].in_features == 3
    assert not [n for n in enc_before if torch.equal(enc_before[n], named(guide)[n])]
    assert not [n for n in dec_before if torch.equal(dec_before[n], named(model)[n])]
    assert result.history[-1]["generator_loss"] < 0  # the minimax loss log(1 - D) is negative


def test_the_reconstruction_phase_reads_the_models_likelihood(digits):
    """valid_reconstruction is -log p(x | z) at the deterministic code, computed by hand."""
    model, guide, _ = ppvae.build("aae", digits.x_dim, SMALL, seed=0)
    result = ppvae.fit(model, guide, digits, epochs=1, progress=False)  # default scheme: aae
    x = digits.valid
    with torch.no_grad():
        logits = model.decoder(guide.encode(x))
        hand = -(x * logits - torch.nn.functional.softplus(logits)).sum(-1).mean()
    assert result.history[-1]["valid_reconstruction"] == pytest.approx(float(hand), rel=1e-5)


def test_resume_is_bit_identical(digits, tmp_path):
    opts = {**SMALL, "z_dim": 2, "prior": "mixture", "conditional": "discriminator", "encoder": "gaussian"}

    def run(out, epochs, seed=0, resume=False):
        model, guide, _ = ppvae.build("aae", digits.x_dim, opts, seed=seed)
        scheme = AdversarialScheme(hidden=(16,))
        r = ppvae.fit(model, guide, digits, scheme=scheme, epochs=epochs, seed=1, out_dir=out, resume=resume, progress=False)
        return model, scheme, r

    m1, s1, straight = run(tmp_path / "a", 3)
    run(tmp_path / "b", 1)
    m2, s2, resumed = run(tmp_path / "b", 3, seed=5, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(s1.state_dict().values(), s2.state_dict().values()))
    strip = [[{k: v for k, v in h.items() if k not in ppvae.train.TIMING_KEYS} for h in r.history] for r in (straight, resumed)]
    assert strip[0] == strip[1]
    assert set(checkpoint.load(tmp_path / "b" / "last.pt")["optimizers"]) == {"autoencoder", "discriminator", "generator"}


def test_log_likelihood_needs_a_guide_with_a_density(digits):
    x = digits.test[:20]
    model, guide, _ = ppvae.build("aae", digits.x_dim, SMALL, seed=0)
    with pytest.raises(ConfigError, match="Delta"):
        ppvae.log_likelihood(model, guide, x, num_samples=10)
    model, guide, _ = ppvae.build("aae", digits.x_dim, {**SMALL, "encoder": "gaussian"}, seed=0)
    assert torch.isfinite(ppvae.log_likelihood(model, guide, x, num_samples=10)).all()
    model, guide, _ = ppvae.build("aae", digits.x_dim, {**SMALL, "encoder": "gaussian", "z_dim": 2, "prior": "swiss-roll"}, seed=0)
    with pytest.raises(ConfigError, match="no density"):
        ppvae.log_likelihood(model, guide, x, num_samples=10)


def test_bad_aae_options_are_refused():
    with pytest.raises(ConfigError, match="z_dim=2"):
        ppvae.build("aae", 64, {"prior": "mixture"})
    with pytest.raises(ConfigError, match="its own region"):
        ppvae.build("aae", 64, {"conditional": "discriminator"})
    with pytest.raises(ConfigError, match="generator_loss"):
        AdversarialScheme(generator_loss="wasserstein")
    with pytest.raises(ConfigError, match="dropout"):
        ppvae.build("aae", 64, {"dropout": 1.0})


def test_dropout_acts_in_training_only(digits):
    """``dropout`` puts a Dropout after every hidden layer of encoder and decoder: codes and
    decodings are random in train() mode and deterministic in eval() mode (sampling, evaluation)."""
    model, guide, _ = ppvae.build("aae", digits.x_dim, {"hidden": [32, 32], "dropout": 0.5}, seed=0)
    for net in (guide.net, model.decoder):
        assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    x = digits.train[:16]
    model.train(), guide.train()
    assert not torch.equal(guide.encode(x), guide.encode(x))
    model.eval(), guide.eval()
    z = guide.encode(x)
    assert torch.equal(z, guide.encode(x)) and torch.equal(model.decode(z), model.decode(z))
    plain, _, _ = ppvae.build("aae", digits.x_dim, {"hidden": [32, 32]}, seed=0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    with pytest.raises(ConfigError, match="dropout"):
        mlp(4, [8], 2, "relu", dropout=-0.1)
