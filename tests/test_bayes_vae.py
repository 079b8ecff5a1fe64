"""The Bayesian-decoder VAE (``bayes-vae``) and its building blocks in ``ppvae.bayes``: the weight KL
against its closed form, the per-particle layer against a loop, the local reparameterization
trick against weight sampling, training moving both moments of q(w), bit-identical resume, the
arviz export, and the command line."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
import torch.nn.functional as F

import ppvae
from ppvae.bayes import (MeanFieldNormal, ScaleMixtureNormal, batched_linear, inference_data, lrt_linear,
                         save_posterior_scales, standard_init)
from ppvae.checkpoint import load
from ppvae.cli import main
from ppvae.errors import ConfigError
from ppvae.objectives import AnalyticELBO, ELBO
from ppvae.traces import trace_pair

SMALL = {"z_dim": 3, "hidden": [16], "likelihood": "bernoulli"}
LOG_2PI = math.log(2 * math.pi)


def perturb(guide, seed=0):
    """Random means and log-variances, so the KL is not the initial one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in guide.weights.loc.values():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        for p in guide.weights.log_var.values():
            p.copy_(-4 + 2 * torch.rand(p.shape, generator=g))


@pytest.fixture
def pair(digits):
    model, guide, _ = ppvae.build("bayes-vae", digits.x_dim, SMALL, seed=0)
    perturb(guide)
    return model, guide, digits.train[:20]


# --- the weight KL ----------------------------------------------------------------------------


@pytest.mark.parametrize("prior_scale", [1.0, 0.3])
@pytest.mark.parametrize("particles", [1, 4])
def test_weight_kl_equals_the_closed_form(digits, prior_scale, particles):
    model, guide, _ = ppvae.build("bayes-vae", digits.x_dim, {**SMALL, "prior_scale": prior_scale}, seed=0)
    perturb(guide)
    hand = 0.0
    for s in guide.weights.sites:  # KL(N(m, v) || N(0, s^2)) = log s - log v / 2 + (v + m^2) / (2 s^2) - 1/2
        m, lv = guide.weights.mean(s).detach().double(), guide.weights.log_var[s.replace(".", "_")].detach().double()
        hand += float((math.log(prior_scale) - lv / 2 + (lv.exp() + m**2) / (2 * prior_scale**2) - 0.5).sum())
    tr = trace_pair(model, guide, digits.train[:10], num_particles=particles)
    assert set(tr.global_guide_sites) == set(guide.weights.sites)
    assert float(AnalyticELBO().global_term(tr).detach()) == pytest.approx(-hand, rel=1e-5)
    assert float(guide.weights.kl("normal", prior_scale).detach()) == pytest.approx(hand, rel=1e-5)


def test_monte_carlo_weight_term_is_log_prior_minus_log_q_at_the_draws(pair):
    model, guide, x = pair
    tr = trace_pair(model, guide, x, num_particles=3)
    hand = torch.zeros(3, dtype=torch.float64)
    for s in guide.weights.sites:
        w = tr.global_guide_sites[s].value.double().reshape(3, -1)
        m = guide.weights.mean(s).double().reshape(-1)
        sd = guide.weights.scale(s).double().reshape(-1)
        log_q = (-0.5 * ((w - m) / sd) ** 2 - sd.log() - 0.5 * LOG_2PI).sum(1)
        log_p = (-0.5 * w**2 - 0.5 * LOG_2PI).sum(1)
        hand += log_p - log_q
    torch.testing.assert_close(ELBO().global_term(tr).double(), hand.mean(), rtol=1e-5, atol=1e-3)


def test_scale_mixture_prior_density_and_monte_carlo_kl(digits):
    pi, s1, s2 = 0.5, 1.0, math.exp(-6)
    d = ScaleMixtureNormal(torch.zeros(()), pi, s1, s2, batch_shape=(7,))
    v = torch.linspace(-2, 2, 7)
    hand = torch.log(pi * torch.exp(-0.5 * (v / s1) ** 2) / (s1 * math.sqrt(2 * math.pi))
                     + (1 - pi) * torch.exp(-0.5 * (v / s2) ** 2) / (s2 * math.sqrt(2 * math.pi)))
    torch.testing.assert_close(d.log_prob(v), hand)
    draws = d.sample((20000,))
    assert abs(float(draws.var()) - (pi * s1**2 + (1 - pi) * s2**2)) < 0.03
    assert float((draws.abs() < 0.02).double().mean()) == pytest.approx(0.5, abs=0.03)  # the spike
    model, guide, _ = ppvae.build("bayes-vae", digits.x_dim, {**SMALL, "prior": "scale-mixture"}, seed=0)
    tr = trace_pair(model, guide, digits.train[:10], num_particles=2)
    # no closed form: elbo-analytic keeps the Monte Carlo term for the weights
    torch.testing.assert_close(AnalyticELBO().global_term(tr), ELBO().global_term(tr))


def test_bad_options_are_config_errors(digits):
    for bad, words in [({"prior": "laplace"}, "prior must be one of"), ({"prior_scale": 0.0}, "prior_scale"),
                       ({"mixture": [1.5, 1.0, 0.1]}, "0 < pi < 1"), ({"likelihood": "poisson"}, "likelihood"),
                       ({"hidden": []}, "hidden"), ({"init_log_var": float("nan")}, "init_log_var")]:
        with pytest.raises(ConfigError, match=words):
            ppvae.build("bayes-vae", digits.x_dim, {**SMALL, **bad})


# --- the layers ---------------------------------------------------------------------------------


def test_batched_linear_equals_a_loop_over_particles():
    g = torch.Generator().manual_seed(0)
    K, B, i, o = 5, 7, 4, 3
    w, b, h = torch.randn(K, 1, o, i, generator=g), torch.randn(K, 1, o, generator=g), torch.randn(K, B, i, generator=g)
    out = batched_linear(h, w, b)
    loop = torch.stack([F.linear(h[k], w[k, 0], b[k, 0]) for k in range(K)])
    torch.testing.assert_close(out, loop)
    torch.testing.assert_close(batched_linear(h[:1], w, b), torch.stack([F.linear(h[0], w[k, 0], b[k, 0]) for k in range(K)]))
    torch.testing.assert_close(batched_linear(h[0], w[0, 0], b[0, 0]), F.linear(h[0], w[0, 0], b[0, 0]))
    with pytest.raises(ConfigError, match="weight draws"):
        batched_linear(torch.randn(3, B, i), w, b)


def test_vectorized_decoder_equals_a_loop_over_particles(pair):
    """The whole likelihood under K particles (one weight draw each) equals running the decoder
    once per particle at that particle's weights."""
    model, guide, x = pair
    K = 4
    tr = trace_pair(model, guide, x, num_particles=K)
    z = tr.guide_sites["z"].value  # (K, B, z)
    lik = tr.model_sites["x"].log_prob  # (K, B)
    for k in range(K):
        weights = {s: tr.global_guide_sites[s].value[k, 0] for s in guide.weights.sites}
        logits = model.decoder(z[k], weights)
        torch.testing.assert_close(lik[k], (x * logits - F.softplus(logits)).sum(-1), rtol=1e-5, atol=1e-4)


def test_local_reparameterization_has_the_exact_preactivation_distribution():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(1, 6, generator=g).expand(40000, 6)
    loc_w, var_w = torch.randn(2, 6, generator=g), 0.1 + torch.rand(2, 6, generator=g)
    loc_b, var_b = torch.randn(2, generator=g), 0.1 + torch.rand(2, generator=g)
    torch.manual_seed(0)
    lrt = lrt_linear(h, loc_w, var_w, loc_b, var_b)
    w = loc_w + var_w.sqrt() * torch.randn(40000, 2, 6)
    b = loc_b + var_b.sqrt() * torch.randn(40000, 2)
    sampled = (w @ h[0]) + b
    mean, var = h[0] @ loc_w.T + loc_b, h[0] ** 2 @ var_w.T + var_b
    for draws in (lrt, sampled):
        torch.testing.assert_close(draws.mean(0), mean, atol=4 * float(var.max().sqrt()) / 200, rtol=0)
        torch.testing.assert_close(draws.var(0), var, rtol=0.05, atol=0)


def test_lrt_bound_matches_weight_sampling_in_expectation(digits):
    """Per datapoint the trick changes nothing in distribution: the two ELBOs agree on average."""
    opts = {**SMALL, "init_log_var": -3.0}
    model, guide, _ = ppvae.build("bayes-vae", digits.x_dim, opts, seed=0)
    lrt_model, _, _ = ppvae.build("bayes-vae", digits.x_dim, {**opts, "local_reparameterization": True}, seed=0)
    lrt_model.attach_posterior(guide.weights)
    x = digits.train[:30]
    torch.manual_seed(0)
    with torch.no_grad():
        a = torch.stack([ppvae.get_objective("elbo", 200).bound(model, guide, x) for _ in range(5)]).mean(0)
        b = torch.stack([ppvae.get_objective("elbo", 200).bound(lrt_model, guide, x) for _ in range(5)]).mean(0)
    assert (a - b).abs().mean() < 0.15 and (a - b).abs().max() < 0.6


# --- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("objective, k, extra", [("elbo-analytic", 1, {}), ("elbo", 3, {}), ("iwae", 4, {}),
                                                 ("elbo", 1, {"prior": "scale-mixture"}),
                                                 ("elbo-analytic", 2, {"local_reparameterization": True})])
def test_training_moves_means_and_scales_of_every_layer(digits, objective, k, extra):
    model, guide, _ = ppvae.build("bayes-vae", digits.x_dim, {**SMALL, **extra}, seed=0)
    assert not list(model.parameters())  # the model's network is a draw from the guide's q(w)
    before = {n: p.detach().clone() for n, p in guide.named_parameters()}
    result = ppvae.fit(model, guide, digits, epochs=3, objective=objective, num_particles=k, lr=3e-3, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    for n, p in guide.named_parameters():
        assert not torch.equal(before[n], p.detach()), f"{n} did not move"
    # the KL pushes the scales of weights the data does not pin up from their initial e^-5
    assert float(torch.cat([v.detach().reshape(-1) for v in guide.weights.log_var.values()]).mean()) > -10.0


def test_kl_warmup_tempers_the_weight_kl(pair):
    model, guide, x = pair
    losses = {}
    for beta in (1.0, 0.0):
        torch.manual_seed(5)
        losses[beta] = ppvae.get_objective("elbo-analytic").loss(model, guide, x, num_data=100, beta=beta)
    torch.manual_seed(5)
    tr = trace_pair(model, guide, x, num_data=100)
    lik = tr.log_likelihood_terms().sum() * tr.scale
    torch.testing.assert_close(losses[0.0], -lik)  # beta = 0: neither the local nor the weight KL
    assert float(losses[1.0] - losses[0.0]) > float(guide.weights.kl()) * 0.99  # the weight KL, once


def test_resume_is_bit_identical(digits, tmp_path):
    def run(folder, epochs, resume=False):
        model, guide, _ = ppvae.build("bayes-vae", digits.x_dim, SMALL, seed=0)
        r = ppvae.fit(model, guide, digits, epochs=epochs, objective="iwae", num_particles=2, kl_warmup_epochs=2.0,
                      out_dir=folder, resume=resume, progress=False, seed=3)
        return guide, r

    g1, straight = run(tmp_path / "a", 3)
    run(tmp_path / "b", 1)
    g2, resumed = run(tmp_path / "b", 3, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(g1.state_dict().values(), g2.state_dict().values()))
    strip = [[{k: v for k, v in h.items() if k not in ("time", "epoch_seconds", "cpu_seconds")} for h in r.history]
             for r in (straight, resumed)]
    assert strip[0] == strip[1]


# --- using a trained model ----------------------------------------------------------------------


def test_samples_and_decode_use_the_posterior_not_the_prior(pair):
    model, guide, x = pair
    latents = model.sample_latents(5)
    assert set(latents) == {"z", *guide.weights.sites} and latents["z"].shape == (5, SMALL["z_dim"])
    for s in guide.weights.sites:  # a draw from q: within a few posterior sds of the means
        dev = (latents[s] - guide.weights.mean(s)) / guide.weights.scale(s)
        assert float(dev.abs().max()) < 7
    z = torch.randn(4, SMALL["z_dim"])
    mean_weights = {s: guide.weights.mean(s) for s in guide.weights.sites}
    torch.testing.assert_close(model.decode(z), torch.sigmoid(model.decoder(z, mean_weights)))
    assert ppvae.sample(model, 6, x.shape[1]).shape == (6, x.shape[1])
    bare = type(model)(x.shape[1], model.config)
    with pytest.raises(ConfigError, match="attach_posterior"):
        bare.decode(z)


def test_log_likelihood_is_finite_and_iwae_bounds_it(pair):
    model, guide, x = pair
    torch.manual_seed(0)
    lp = ppvae.log_likelihood(model, guide, x, num_samples=300)
    elbo = torch.stack([ppvae.get_objective("elbo-analytic").bound(model, guide, x) for _ in range(50)]).mean(0)
    assert torch.isfinite(lp).all() and float((elbo - lp).mean()) < 0.0


def test_arviz_export_and_posterior_figure(pair, tmp_path):
    import arviz as az

    _, guide, _ = pair
    q = guide.weights
    chosen = {"decoder.0.weight": [(0, 1), (5, 2)], "decoder.1.bias": [(3,)]}
    idata = inference_data(q, chosen, num_draws=4000, chains=4, seed=0)
    assert set(idata.posterior.data_vars) == set(chosen)
    assert idata.posterior["decoder.0.weight"].shape == (4, 1000, 2)
    summary = az.summary(idata, kind="stats")
    for site, idx in chosen.items():
        for j, i in enumerate(idx):
            row = summary.loc[f"{site}[{list(i)}]"]
            assert row["mean"] == pytest.approx(float(q.mean(site)[i]), abs=4 * float(q.scale(site)[i]) / 60 + 1e-3)
            assert row["sd"] == pytest.approx(float(q.scale(site)[i]), rel=0.1, abs=1e-3)
    assert set(inference_data(q, num_draws=40).posterior.data_vars) == set(q.sites)  # default: some of every tensor
    with pytest.raises(ConfigError, match="no weight site"):
        inference_data(q, {"encoder.0.weight": [(0, 0)]})
    path = save_posterior_scales(q, tmp_path / "std.png", init_log_var=-10.0, prior_scales=[1.0])
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_mean_field_init_is_an_ordinary_network(digits):
    torch.manual_seed(0)
    init = standard_init([3, 16, 64], "decoder")
    q = MeanFieldNormal(init, -10.0)
    for s, t in init.items():
        assert torch.equal(q.mean(s), t)
        torch.testing.assert_close(q.scale(s), torch.full_like(t, math.exp(-5.0)))
    bound = 1 / math.sqrt(16)  # nn.Linear's init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(init["decoder.1.weight"].abs().max()) <= bound


def test_cli_trains_and_evaluates_bayes_vae(tmp_path, capsys):
    run = tmp_path / "bv"
    assert main(["train", "--model", "bayes-vae", "--dataset", "digits", "--epochs", "2", "--limit", "300",
                 "--set", "hidden=[32]", "--set", "z_dim=2", "--out", str(run), "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--num-samples", "30", "-k", "5", "--limit", "40"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert math.isfinite(report["log_px"]) and report["elbo"] <= report["log_px"] + 1.0
    # active units are about the per-datapoint code only, not the decoder's weight sites
    assert report["active_units"].keys() == {"z"} and report["active_units"]["z"]["total"] == 2
    for name in ("reconstructions.png", "latent_scatter.png", "manifold.png", "samples.png"):
        assert (run / name).exists(), name
    ckpt = load(run / "last.pt")
    assert ckpt["meta"]["family"] == "bayes-vae" and not ckpt["model_state"].get("decoder.0.weight")
    assert main(["sample", str(run), "--num", "9", "--out", str(tmp_path / "s.png")]) == 0


def test_cli_weight_decay_reaches_every_optimizer(tmp_path):
    """--weight-decay (the AEVB report's MAP baseline) is saved with the run and used by Adam."""
    run = tmp_path / "wd"
    assert main(["train", "--model", "vae", "--dataset", "digits", "--epochs", "1", "--limit", "100",
                 "--set", "hidden=[[8]]", "--set", "z_dims=[2]", "--weight-decay", "0.01", "--out", str(run), "--no-progress"]) == 0
    ckpt = load(run / "last.pt")
    assert ckpt["train_config"]["weight_decay"] == 0.01
    assert {g["weight_decay"] for o in ckpt["optimizers"].values() for g in o["param_groups"]} == {0.01}


def test_posterior_means_leave_out_the_weight_sites(pair):
    from ppvae.analysis import active_units, posterior_means

    _, guide, x = pair
    means = posterior_means(guide, x, num_particles=3)
    assert means.keys() == {"z"} and means["z"].shape == (20, SMALL["z_dim"])
    assert active_units(guide, x).keys() == {"z"}
