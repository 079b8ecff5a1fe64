"""alpha-GAN: both discriminators reach their optimum through the scheme's own step (so swapped
classes fail), the encoder's and generator's GAN terms are adversarial, every one of the four networks
trains, the L1 term is what it says, options resolve and are checked, and the ``alpha-gan`` scheme
resumes bit-identically."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppvae
import ppvae.checkpoint as checkpoint
from ppvae.errors import ConfigError
from ppvae.nn import mlp
from ppvae.schemes import AlphaGANScheme
from ppvae.schemes.alpha_gan import adversarial_loss, code_discriminator_loss, discriminator_loss, reconstruction_l1
from ppvae.train import TrainConfig

SMALL = {"hidden": [16], "z_dim": 3, "discriminator_hidden": [16], "code_discriminator_hidden": [16]}


class LinearModel(nn.Module):
    """z ~ N(0, 1) in 1-D; x ~ N(a + b z, 1), so x_gen = a + b z ~ N(a, b^2). No parameters."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.register_buffer("a", torch.tensor(a))
        self.register_buffer("b", torch.tensor(b))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
            pyro.sample("x", dist.Normal(self.a + self.b * z, torch.ones_like(z)).to_event(1), obs=x)


class LinearEncoder(nn.Module):
    """z_hat = c + d x (a Delta): for x ~ N(0, 1), the codes follow N(c, d^2)."""

    def __init__(self, c: float, d: float):
        super().__init__()
        self.register_buffer("c", torch.tensor(c))
        self.register_buffer("d", torch.tensor(d))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.c + self.d * x).to_event(1))


def normal(loc, scale):
    return torch.distributions.Normal(loc, scale)


@pytest.mark.parametrize("group", ["code_discriminator", "discriminator"])
def test_each_discriminator_reaches_its_optimum_through_the_schemes_step(group):
    """Only one discriminator's phase is stepped, on phases yielded by the scheme's own ``step``.
    With data x ~ p* = N(0, 1), codes z_hat = 1 + x/2 ~ q = N(1, 1/4), prior p = N(0, 1),
    x_gen = 1 + z/2 ~ N(1, 1/4) and x_rec = 1 + z_hat/2 ~ N(1.5, 1/16), the losses' minimizers are
    C*(z) = p / (p + q) (prior draws real) and D*(x) = p* / (p* + q_rec + q_gen) (data real).
    Swapping C's classes (in ``step`` or in ``code_discriminator_loss``) gives q / (p + q) instead,
    and misses by up to 0.8."""
    torch.manual_seed(0)
    model, guide = LinearModel(1.0, 0.5), LinearEncoder(1.0, 0.5)
    net = mlp(1, (32, 32), 1, "tanh")
    other = mlp(1, (4,), 1, "tanh")
    D, C = (net, other) if group == "discriminator" else (other, net)
    scheme = AlphaGANScheme(D, C, autoencoder_steps=1)
    scheme.setup(model, guide, torch.randn(8, 1), TrainConfig())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for it in range(1000):
        if it == 700:
            opt.param_groups[0]["lr"] = 3e-4
        for phase in scheme.step(model, guide, torch.randn(512, 1), None, None):
            if phase.group == group:
                opt.zero_grad()
                phase.loss.backward()
                opt.step()
    t = torch.linspace(-1.0, 2.0, 31).unsqueeze(-1)
    if group == "code_discriminator":
        optimal = torch.sigmoid(normal(0.0, 1.0).log_prob(t) - normal(1.0, 0.5).log_prob(t))
    else:
        p, fakes = normal(0.0, 1.0).log_prob(t).exp(), normal(1.5, 0.25).log_prob(t).exp() + normal(1.0, 0.5).log_prob(t).exp()
        optimal = p / (p + fakes)
    with torch.no_grad():
        learned = torch.sigmoid(net(t))
    assert (learned - optimal).abs().max() < 0.08, (learned - optimal).abs().max()
    assert (optimal - (1 - optimal)).abs().max() > 0.6  # far from constant: a swap cannot pass


def test_loss_functions_equal_their_formulas():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    other = torch.tensor([1.0, -0.5, 0.25])
    P = torch.sigmoid(logits)
    torch.testing.assert_close(adversarial_loss(logits), -P.log().mean())
    torch.testing.assert_close(adversarial_loss(logits, "ratio"), (-P.log() + (1 - P).log()).mean())
    torch.testing.assert_close(adversarial_loss(logits, "minimax"), (1 - P).log().mean())
    Q = torch.sigmoid(other)
    torch.testing.assert_close(code_discriminator_loss(logits, other), -(P.log().mean() + (1 - Q).log().mean()))
    torch.testing.assert_close(discriminator_loss(logits, other, -other),
                               -(P.log().mean() + (1 - Q).log().mean() + Q.log().mean()))


class FixedCritic(nn.Module):
    """A frozen critic: logit = 2 - |v - center|^2, high near ``center``."""

    def __init__(self, center: torch.Tensor):
        super().__init__()
        self.register_buffer("center", center)

    def forward(self, v):
        return 2.0 - ((v - self.center) ** 2).sum(-1)


@pytest.mark.parametrize("kind", ["ratio", "non-saturating", "minimax"])
@pytest.mark.parametrize("group", ["encoder", "generator"])
def test_the_gan_terms_are_adversarial(digits, group, kind):
    """With lambda = 0 and frozen critics that score prior-like codes (C) and one fixed image (D)
    high, a few encoder steps raise C(z_hat) and a few generator steps raise D(x_gen): each network
    works *against* its discriminator's fake class. A cooperative sign (the encoder pushed toward
    what C calls fake) lowers them instead."""
    torch.manual_seed(0)
    model, guide, _ = ppvae.build("alpha-gan", digits.x_dim, {**SMALL, "z_dim": 2}, seed=0)
    with torch.no_grad():
        guide.net[-1].bias.fill_(2.0)  # codes start far from the prior's bulk around 0
    C = FixedCritic(torch.zeros(2))
    D = FixedCritic(digits.train[0] * 0.8 + 0.1)
    scheme = AlphaGANScheme(D, C, reconstruction_weight=0.0, autoencoder_steps=1,
                            **({"code_loss": kind} if group == "encoder" else {"generator_loss": kind}))
    x = digits.train[:100]
    scheme.setup(model, guide, x, TrainConfig())
    net = guide if group == "encoder" else model
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    @torch.no_grad()
    def score():
        torch.manual_seed(1)
        if group == "encoder":
            return torch.sigmoid(C(guide.encode(x))).mean()
        return torch.sigmoid(D(model.decode(model.sample_prior(100)))).mean()

    before = score()
    for _ in range(5):
        phase = next(p for p in scheme.step(model, guide, x, None, None) if p.group == group)
        opt.zero_grad()
        phase.loss.backward()
        opt.step()
    assert score() > before + 0.02, (before, score())


def named(*modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


@pytest.mark.parametrize("options", [
    {},
    {"likelihood": "normal", "generator_loss": "minimax", "code_loss": "non-saturating", "noise_std": 0.3,
     "autoencoder_steps": 1, "activation": "relu"},
])
def test_every_parameter_of_all_four_networks_moves(digits, options):
    """Four optimizers over four disjoint groups: a parameter left out of its group (or two
    groups sharing a tensor by accident) shows up as a parameter that never moves."""
    model, guide, _ = ppvae.build("alpha-gan", digits.x_dim, {**SMALL, **options}, seed=0)
    scheme = AlphaGANScheme()
    scheme.setup(model, guide, digits.train[:10], TrainConfig())  # builds D and C from x_dim, z_dim
    before = named(model, guide, scheme.discriminator, scheme.code_discriminator)
    result = ppvae.fit(model, guide, digits, scheme=scheme, epochs=1, batch_size=100, progress=False)
    after = named(model, guide, scheme.discriminator, scheme.code_discriminator)
    assert len(before) == 4 * 4  # two Linear layers (weight, bias) per network
    assert not [n for n in before if torch.equal(before[n], after[n])]
    assert scheme.discriminator[0].in_features == digits.x_dim and scheme.code_discriminator[0].in_features == 3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in scheme.code_discriminator.modules())
    last = result.history[-1]
    assert {"encoder_loss", "generator_loss", "discriminator_loss", "code_discriminator_loss", "l1_reconstruction",
            "encoder_code_term", "generator_gan_term", "discriminator_accuracy", "code_discriminator_accuracy",
            "valid_l1", "generator_lr", "discriminator_lr", "code_discriminator_lr"} <= set(last)


def test_the_default_scheme_is_alpha_gan(digits):
    model, guide, _ = ppvae.build("alpha-gan", digits.x_dim, SMALL, seed=0)
    result = ppvae.fit(model, guide, digits, epochs=1, progress=False)
    assert "code_discriminator_loss" in result.history[-1]


def test_the_l1_term_equals_a_hand_computation():
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    x_rec = torch.tensor([[0.75, 0.25, 0.5], [0.1, 0.2, 0.9]])
    torch.testing.assert_close(reconstruction_l1(x, x_rec), torch.tensor([1.0, 0.4]))
    # through the scheme: E and G by hand from their weights, lambda times the per-pixel mean
    model, guide, _ = ppvae.build("alpha-gan", 3, {**SMALL, "hidden": [4], "z_dim": 2, "reconstruction_weight": 7.0}, seed=0)
    scheme = AlphaGANScheme(mlp(3, (4,), 1), mlp(2, (4,), 1))
    scheme.setup(model, guide, x, TrainConfig())
    E1, E2, G1, G2 = guide.net[0], guide.net[2], model.generator[0], model.generator[2]
    with torch.no_grad():
        z = torch.tanh(x @ E1.weight.T + E1.bias) @ E2.weight.T + E2.bias
        p = 1 / (1 + torch.exp(-(torch.tanh(z @ G1.weight.T + G1.bias) @ G2.weight.T + G2.bias)))
        hand = (x - p).abs().sum(1)  # per datapoint
        encoder = next(scheme.step(model, guide, x, None, None))
    assert encoder.name == "encoder_loss"
    assert float(encoder.metrics["l1_reconstruction"]) == pytest.approx(float(hand.mean()), rel=1e-6)
    code = float(encoder.metrics["encoder_code_term"])
    assert float(encoder.loss) == pytest.approx(7.0 * float(hand.mean()) / 3 + code, rel=1e-6)
    assert scheme.validate(model, guide, x, None)["valid_l1"] == pytest.approx(float(hand.mean()), rel=1e-6)


def test_options_come_from_the_scheme_then_the_model_config():
    x = torch.rand(4, 6).round()
    model, guide, _ = ppvae.build("alpha-gan", 6, {**SMALL, "reconstruction_weight": 40.0, "autoencoder_steps": 3,
                                                  "discriminator_hidden": [5]}, seed=0)
    scheme = AlphaGANScheme()
    scheme.setup(model, guide, x, TrainConfig())
    assert (scheme.lam, scheme.ae_steps, scheme.discriminator[0].out_features) == (40.0, 3, 5)
    scheme = AlphaGANScheme(reconstruction_weight=5.0, adam_betas=(0.9, 0.99), discriminator_lr=1e-4)
    scheme.setup(model, guide, x, TrainConfig(lr=1e-3))
    groups = scheme.param_groups(model, guide, x, TrainConfig(lr=1e-3))
    assert scheme.lam == 5.0 and scheme.ae_steps == 3
    assert {k: (g.lr, g.betas) for k, g in groups.items()} == {
        "encoder": (1e-3, (0.9, 0.99)), "generator": (1e-3, (0.9, 0.99)),
        "discriminator": (1e-4, (0.9, 0.99)), "code_discriminator": (1e-4, (0.9, 0.99))}
    assert {id(p) for p in groups["encoder"].params} == {id(p) for p in guide.parameters()}
    assert {id(p) for p in groups["generator"].params} == {id(p) for p in model.parameters()}
    # a plain pair without a config gets AlphaGANConfig's defaults
    scheme = AlphaGANScheme()
    scheme.setup(LinearModel(0.0, 1.0), LinearEncoder(0.0, 1.0), torch.randn(4, 1), TrainConfig())
    assert (scheme.lam, scheme.ae_steps, tuple(scheme.settings["adam_betas"])) == (20.0, 2, (0.5, 0.9))
    assert scheme.describe()["reconstruction_weight"] == 20.0


def test_resume_is_bit_identical(digits, tmp_path):
    def run(out, epochs, seed=0, resume=False):
        model, guide, _ = ppvae.build("alpha-gan", digits.x_dim, {**SMALL, "noise_std": 0.1}, seed=seed)
        scheme = AlphaGANScheme()
        r = ppvae.fit(model, guide, digits, scheme=scheme, epochs=epochs, seed=1, out_dir=out, resume=resume, progress=False)
        return model, guide, scheme, r

    m1, g1, s1, straight = run(tmp_path / "a", 3)
    run(tmp_path / "b", 1)
    m2, g2, s2, resumed = run(tmp_path / "b", 3, seed=5, resume=True)
    for a, b in ((m1, m2), (g1, g2), (s1, s2)):
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    assert len(s1.state_dict()) == 2 * 2 * 2  # D and C: two Linear layers each, all compared
    strip = [[{k: v for k, v in h.items() if k != "time" and not k.endswith("seconds")} for h in r.history]  # timings differ
             for r in (straight, resumed)]
    assert strip[0] == strip[1]
    opts = [checkpoint.load(tmp_path / d / "last.pt")["optimizers"] for d in ("a", "b")]
    assert set(opts[1]) == {"encoder", "generator", "discriminator", "code_discriminator"}
    for name in opts[0]:
        a, b = opts[0][name], opts[1][name]
        assert a["param_groups"] == b["param_groups"] and a["param_groups"][0]["betas"] == (0.5, 0.9)
        assert a["state"].keys() == b["state"].keys() and a["state"]
        for k in a["state"]:
            assert all(torch.equal(a["state"][k][s], b["state"][k][s]) for s in ("step", "exp_avg", "exp_avg_sq"))


def test_log_likelihood_refuses_the_implicit_encoder(digits):
    model, guide, _ = ppvae.build("alpha-gan", digits.x_dim, SMALL, seed=0)
    with pytest.raises(ConfigError, match="Delta"):
        ppvae.log_likelihood(model, guide, digits.test[:10], num_samples=10)


def test_bad_alpha_gan_options_are_refused():
    for options, words in (({"reconstruction_weight": -1.0}, "lambda"), ({"autoencoder_steps": 0}, "autoencoder_steps"),
                           ({"code_loss": "wasserstein"}, "code_loss"), ({"likelihood": "poisson"}, "likelihood"),
                           ({"adam_betas": [0.5, 1.0]}, "adam_betas")):
        with pytest.raises(ConfigError, match=words):
            ppvae.build("alpha-gan", 64, options)
    for options, words in (({"reconstruction_weight": -0.5}, "lambda"), ({"autoencoder_steps": 0}, "autoencoder_steps"),
                           ({"autoencoder_steps": 1.5}, "autoencoder_steps"), ({"generator_loss": "hinge"}, "generator_loss"),
                           ({"noise_std": -1.0}, "noise_std"), ({"discriminator_lr": 0.0}, "discriminator_lr")):
        with pytest.raises(ConfigError, match=words):
            AlphaGANScheme(**options)
