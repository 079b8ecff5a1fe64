"""The learned-prior families: VampPrior (mixture of the shared encoder's posteriors at learned
pseudo-inputs) and the learned mixture-of-Gaussians prior."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pyro import poutine

import ppvae
from ppvae.errors import ConfigError
from ppvae.guides.vae import GaussianEncoder
from ppvae.models.mog_prior import MoGPriorConfig, MoGPriorVAE
from ppvae.models.vampprior import VampPriorConfig, VampPriorVAE
from ppvae.objectives import get_objective
from ppvae.traces import trace_pair
from ppvae.train import parameters_of

SMALL = {
    "vampprior": {"z_dims": (3,), "hidden": ((16,),), "num_pseudo_inputs": 7},
    "mog-prior": {"z_dims": (3,), "hidden": ((16,),), "num_components": 4},
}


@pytest.fixture(scope="module")
def digits():
    return ppvae.load_dataset("digits")


def small_pair(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    model, guide, _ = ppvae.build(name, 64, {**SMALL[name], **options})
    return model, guide


def hand_mixture(z: torch.Tensor, log_weights: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """log sum_k w_k N(z; locs[k], diag scales[k]^2), one explicit Normal per component."""
    per_component = [
        log_weights[k] + torch.distributions.Normal(locs[k], scales[k]).log_prob(z).sum(-1) for k in range(locs.shape[0])
    ]
    return torch.logsumexp(torch.stack(per_component, -1), -1)


def vamp_components(model: VampPriorVAE, guide) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z | u_k) read from a trace of the *guide* at the clamped pseudo-inputs."""
    u = model.pseudo_inputs.clamp(0.0, 1.0)
    fn = poutine.trace(guide).get_trace(u).nodes["z"]["fn"]
    return fn.base_dist.loc, fn.base_dist.scale


# --- densities --------------------------------------------------------------------------------


@torch.no_grad()
def test_vampprior_density_is_the_mixture_of_guide_posteriors_at_pseudo_inputs():
    model, guide = small_pair("vampprior")
    model.pseudo_inputs[:2, :5] = torch.tensor([-0.7, 1.6, 0.3, 2.0, -3.0])  # outside [0, 1]: clipped
    locs, scales = vamp_components(model, guide)
    k = model.config.num_pseudo_inputs
    log_w = torch.full((k,), -math.log(k))
    for shape in [(5, 3), (4, 5, 3)]:  # a batch, and a batch under a particle plate
        z = torch.randn(shape) * 2
        torch.testing.assert_close(model.prior().log_prob(z), hand_mixture(z, log_w, locs, scales))

    # and the model's "z" site as ppvae scores it, under a particle plate of 6 samples
    x = torch.rand(5, 64).round()
    tr = trace_pair(model, guide, x, num_particles=6)
    z = tr.model_sites["z"].value
    assert z.shape == (6, 5, 3)
    torch.testing.assert_close(tr.model_sites["z"].log_prob, hand_mixture(z, log_w, locs, scales))


# A VampPrior whose encoder and decoder are linear (hidden=[[]]) with a constant-variance Gaussian
# decoder: each prior component q(z | u_k) = N(mu_k, diag sigma_k^2) pushed through
# x = W z + b + N(0, diag s^2) is a Gaussian in x, so p(x) = (1/K) sum_k N(x; W mu_k + b,
# W diag(sigma_k^2) W^T + diag s^2) exactly: a closed form for ppvae.log_likelihood to match.
LINEAR_VAMP = {"z_dims": [2], "hidden": [[]], "likelihood": "normal", "num_pseudo_inputs": 3}


def linear_vampprior():
    """x_dim 3, z 2, K 3. Encoder: loc = x[:2], scale = softplus(2 x3 - 1, 1.5 x3 - 0.8), so the
    pseudo-inputs' first two coordinates place the components and their third sets the widths;
    at the test points (x3 in [0.4, 1]) the guide is a wider proposal than the posterior. Decoder:
    x[:2] = z + noise, x3 = 0.7 + noise (independent of z), noise scales softplus(-1, -0.5, 0)."""
    model, guide, _ = ppvae.build("vampprior", 3, LINEAR_VAMP)
    with torch.no_grad():
        # rows 2 and 3 have coordinates outside [0, 1]: the prior must use hardtanh(u, 0, 1)
        model.pseudo_inputs.copy_(torch.tensor([[0.0, -0.5, 0.3], [1.0, 0.1, 1.0], [0.2, 1.4, -0.3]]))
        enc = model.encoder.net[0]
        enc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.5]]))
        enc.bias.copy_(torch.tensor([0.0, 0.0, -1.0, -0.8]))
        dec = model.decoder[0]  # outputs (loc, raw scale) of the 3 pixels
        dec.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        dec.bias.copy_(torch.tensor([0.0, 0.0, 0.7, -1.0, -0.5, 0.0]))
    assert guide.layers[0] is model.encoder
    return model, guide


def exact_marginal(model: VampPriorVAE, weights: torch.Tensor | None = None) -> torch.distributions.Distribution:
    """p(x) of linear_vampprior's pair, in float64, from its weights by hand (not from model.prior())."""
    d = lambda t: t.detach().double()  # noqa: E731
    enc, dec = model.encoder.net[0], model.decoder[0]
    u = d(model.pseudo_inputs).clamp(0.0, 1.0)
    h = u @ d(enc.weight).T + d(enc.bias)
    mu, sigma = h[:, :2], torch.nn.functional.softplus(h[:, 2:])
    W, b = d(dec.weight)[:3], d(dec.bias)[:3]
    s = torch.nn.functional.softplus(d(dec.bias)[3:]) + model.config.min_scale
    loc = mu @ W.T + b
    cov = W @ torch.diag_embed(sigma**2) @ W.T + torch.diag(s**2)
    k = u.shape[0]
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else weights
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=weights), torch.distributions.MultivariateNormal(loc, cov)
    )


def test_vampprior_log_likelihood_equals_the_closed_form_marginal():
    model, guide = linear_vampprior()
    px = exact_marginal(model)
    torch.manual_seed(0)
    x = px.sample((30,)).float()
    x[:, 2] = torch.linspace(0.4, 1.0, 30)  # where the guide's scale is 0.7-1.3: a safe proposal
    exact = px.log_prob(x.double())

    # the components are distinct in place and width, so getting them or their weights wrong moves
    # log p(x) by far more than the tolerance below (these are exact, not estimated, differences)
    u = model.pseudo_inputs.detach().clamp(0.0, 1.0)
    prior = model.prior()
    torch.testing.assert_close(prior.loc.detach(), u[:, :2])
    assert len({round(float(v), 3) for v in prior.scale.detach()[:, 0]}) == 3
    for wrong_weights in ([0.5, 0.3, 0.2], [0.2, 0.3, 0.5]):
        wrong = exact_marginal(model, torch.tensor(wrong_weights, dtype=torch.float64)).log_prob(x.double())
        assert (wrong - exact).abs().mean() > 0.1

    torch.manual_seed(1)
    result = ppvae.log_likelihood(model, guide, x, num_samples=20_000, diagnostics=True)
    assert (result.pareto_k < 0.5).all(), result.pareto_k.max()  # the estimate itself is reliable
    err = result.log_px.double() - exact
    # 20,000 samples, seeds 1-5: mean |err| 0.008-0.013, max 0.026-0.043. Measured with the prior
    # broken on purpose: weights (0.5, 0.3, 0.2) give mean |err| 0.16, the pseudo-inputs unclipped
    # 0.40, the component scales rolled by one 0.46, one component dropped 0.42.
    assert err.abs().mean() < 0.03, float(err.abs().mean())
    assert err.abs().max() < 0.1, float(err.abs().max())


@torch.no_grad()
def test_mog_prior_density_is_the_weighted_gaussian_mixture():
    model, guide = small_pair("mog-prior")
    model.mixture_logits.copy_(torch.randn(4))
    model.component_raw_scales.copy_(torch.randn(4, 3))
    log_w = torch.log_softmax(model.mixture_logits, 0)
    locs, scales = model.component_locs, torch.nn.functional.softplus(model.component_raw_scales)
    for shape in [(5, 3), (4, 5, 3)]:
        z = torch.randn(shape) * 2
        torch.testing.assert_close(model.prior().log_prob(z), hand_mixture(z, log_w, locs, scales))
    tr = trace_pair(model, guide, torch.rand(5, 64).round(), num_particles=6)
    z = tr.model_sites["z"].value
    torch.testing.assert_close(tr.model_sites["z"].log_prob, hand_mixture(z, log_w, locs, scales))


@torch.no_grad()
def test_mog_prior_sits_on_the_top_layer_of_a_two_layer_model():
    torch.manual_seed(0)
    config = MoGPriorConfig(stochastic_layers=2, z_dims=(4, 2), hidden=((16,), (8,)), num_components=3)
    model = MoGPriorVAE(64, config)
    guide = GaussianEncoder(64, config)
    tr = trace_pair(model, guide, torch.rand(5, 64).round(), num_particles=2)
    z2 = tr.model_sites["z2"].value
    log_w = torch.log_softmax(model.mixture_logits, 0)
    scales = torch.nn.functional.softplus(model.component_raw_scales)
    torch.testing.assert_close(tr.model_sites["z2"].log_prob, hand_mixture(z2, log_w, model.component_locs, scales))


def test_config_defaults_and_errors():
    c = VampPriorConfig()
    assert (c.z_dims, c.hidden, c.num_pseudo_inputs) == ((40,), ((300, 300),), 500)  # the paper's
    assert (MoGPriorConfig().z_dims, MoGPriorConfig().num_components) == ((40,), 10)
    assert MoGPriorConfig(stochastic_layers=2).z_dims == (100, 50)  # IWAE's two-layer architecture
    with pytest.raises(ConfigError, match="one stochastic layer"):
        VampPriorConfig(stochastic_layers=2)
    with pytest.raises(ConfigError, match="one stochastic layer"):
        VampPriorConfig(z_dims=(10, 5), hidden=((8,), (8,)))
    with pytest.raises(ConfigError, match="num_pseudo_inputs"):
        VampPriorConfig(num_pseudo_inputs=0)
    with pytest.raises(ConfigError, match="num_components"):
        MoGPriorConfig(num_components=0)


# --- sharing and training ---------------------------------------------------------------------


def test_the_encoder_is_one_object_with_one_optimizer_entry(digits, tmp_path):
    model, guide = small_pair("vampprior")
    assert model.encoder is guide.layers[0]
    params = parameters_of(model, guide, digits.train[:10])
    unique = {id(p) for p in [*model.parameters(), *guide.parameters()]}
    assert len(params) == len(unique) == len({id(p) for p in params})
    for p in model.encoder.parameters():
        assert sum(q is p for q in params) == 1

    ppvae.fit(model, guide, digits, epochs=1, batch_size=500, progress=False, out_dir=tmp_path)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    optimizer = ckpt["optimizers"]["pair"]
    assert len(optimizer["param_groups"][0]["params"]) == len(unique)
    assert len(optimizer["state"]) == len(unique)  # one Adam state each, the encoder's included


@pytest.mark.parametrize("name", ["vampprior", "mog-prior"])
def test_every_parameter_moves(name, digits):
    model, guide = small_pair(name)
    before = {f"{who}.{n}": p.detach().clone() for who, m in (("model", model), ("guide", guide)) for n, p in m.named_parameters()}
    if name == "vampprior":
        assert any(k.startswith("model.pseudo_inputs") for k in before)
        assert any(k.startswith("model.encoder.") for k in before)
    ppvae.fit(model, guide, digits, epochs=1, batch_size=100, progress=False)
    after = {f"{who}.{n}": p for who, m in (("model", model), ("guide", guide)) for n, p in m.named_parameters()}
    frozen = [n for n in before if torch.equal(before[n], after[n])]
    assert not frozen, f"parameters that never trained: {frozen}"


def test_the_prior_trains_the_shared_encoder():
    model, guide = small_pair("vampprior")
    model.prior().log_prob(torch.randn(8, 3)).sum().backward()  # the prior term alone
    assert model.pseudo_inputs.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in guide.layers[0].parameters())
    assert all(p.grad is None for p in model.decoder.parameters())


@pytest.mark.parametrize("name", ["vampprior", "mog-prior"])
def test_log_likelihood_is_finite_and_above_the_elbo(name, digits):
    model, guide = small_pair(name)
    ppvae.fit(model, guide, digits, epochs=2, batch_size=100, progress=False)
    x = digits.test[:20]
    torch.manual_seed(1)
    log_px = ppvae.log_likelihood(model, guide, x, num_samples=500)
    assert log_px.shape == (20,) and torch.isfinite(log_px).all()
    with torch.no_grad():
        elbo = get_objective("elbo", 500).bound(model, guide, x)  # the ELBO's mean over 500 draws
    assert (log_px > elbo).all()  # Jensen: the importance estimate sits above the ELBO
    samples = ppvae.sample(model, 6, 64)
    assert samples.shape == (6, 64) and ((samples >= 0) & (samples <= 1)).all()


@pytest.mark.parametrize("objective,k", [("elbo", 1), ("elbo-analytic", 1), ("iwae", 3)])
def test_registry_pair_trains_with_each_objective(objective, k, digits):
    model, guide = small_pair("vampprior")
    result = ppvae.fit(model, guide, digits, epochs=2, batch_size=100, objective=objective, num_particles=k, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[1] < losses[0]
    assert math.isfinite(result.best_valid)


def test_analytic_elbo_falls_back_to_monte_carlo_for_a_mixture_prior(digits):
    model, guide = small_pair("vampprior")
    x = digits.train[:50].bernoulli(generator=torch.Generator().manual_seed(0))
    losses = {}
    for name in ("elbo", "elbo-analytic"):
        torch.manual_seed(3)
        losses[name] = get_objective(name).loss(model, guide, x, num_data=1000)
    torch.testing.assert_close(losses["elbo-analytic"], losses["elbo"], rtol=0, atol=0)

    # whole runs too, from identical starting pairs (deep-copied together: the sharing survives)
    runs = {}
    for name in ("elbo", "elbo-analytic"):
        m, g = copy.deepcopy((model, guide))
        assert m.encoder is g.layers[0]
        runs[name] = [h["train_loss"] for h in ppvae.fit(m, g, digits, epochs=1, objective=name, progress=False).history]
    assert runs["elbo"] == runs["elbo-analytic"]


@pytest.mark.parametrize("name", ["vampprior", "mog-prior"])
def test_state_dict_round_trip_restores_log_weights(name, tmp_path, digits):
    model, guide = small_pair(name, seed=0)
    ppvae.fit(model, guide, digits, epochs=1, batch_size=100, progress=False)
    torch.save({"model": model.state_dict(), "guide": guide.state_dict()}, tmp_path / "pair.pt")
    fresh_model, fresh_guide = small_pair(name, seed=1)
    x = digits.test[:10]

    def log_weights(m, g):
        torch.manual_seed(7)
        with torch.no_grad():
            return trace_pair(m, g, x, num_particles=5).log_weights()

    assert not torch.allclose(log_weights(model, guide), log_weights(fresh_model, fresh_guide))
    state = torch.load(tmp_path / "pair.pt")
    fresh_model.load_state_dict(state["model"])
    fresh_guide.load_state_dict(state["guide"])
    assert torch.equal(log_weights(model, guide), log_weights(fresh_model, fresh_guide))
    if name == "vampprior":
        assert fresh_model.encoder is fresh_guide.layers[0]


# --- regression: the Frey Face collapse ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("warmup, collapses", [(20.0, True), (100.0, False)])
def test_vampprior_frey_face_warm_up(warmup, collapses, data_root):
    """On Frey Face (1,565 images: 16 steps per epoch at batch 100, lr 1e-4) a 20-epoch KL warm-up
    collapsed the VampPrior: the decoder first fits the mean face, and before it starts to use z
    the tempered KL already makes q(z|x) = q(z|u_k) for every x attractive. With the adaptive prior
    that costs no KL at *any* constant encoder output (a N(0, I) prior pins the constant), and the
    run never left it (medium run: log p(x) 566 at k=10 and k=5000 alike). The authors' 100-epoch
    warm-up lets the encoder carry information first. Signal-to-noise of each latent,
    Var_x E[z|x] / E_x Var[z|x], after 40 epochs (~1 min each on one CPU thread)."""
    data = ppvae.load_dataset("frey-face", data_root, seed=0)
    torch.manual_seed(0)
    model, guide, _ = ppvae.build("vampprior", data.x_dim, {"z_dims": [40], "hidden": [[500, 500, 500]], "likelihood": "normal"})
    config = ppvae.TrainConfig(objective="elbo-analytic", epochs=40, batch_size=100, lr=1e-4,
                               kl_warmup_epochs=warmup, seed=0, progress=False)
    ppvae.fit(model, guide, data, config)
    with torch.no_grad():
        loc, scale = guide.layers[0](data.valid)
        snr = loc.var(0) / scale.pow(2).mean(0)
    if collapses:
        assert snr.max() < 0.01, snr.max()
    else:
        assert (snr > 1).sum() >= 10, snr.sort(descending=True).values[:10]
