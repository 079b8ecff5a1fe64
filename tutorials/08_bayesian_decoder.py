# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Full variational Bayes over the decoder's weights
#
# Kingma & Welling (2014, appendix F) also treat the decoder's weights w as latent variables with
# a prior, inferred by the same reparameterized ELBO. In a Pyro pair such weights are **global
# latents**: sample sites *outside* `pyro.plate("data", ...)`, drawn once and shared by every
# datapoint. ppvae scores them once per particle, not per datapoint:
#
#     loss = -( N/B * sum_b [log p(x_b, z_b | w) - log q(z_b | x_b)]  +  log p(w) - log q(w) )
#
# (`elbo-analytic` and `iwae` use the closed-form KL(q(w) || p(w)) for the last term), and
# `ppvae.log_likelihood` then estimates each test point's log density under the **posterior
# predictive**, log E_q(w)[p(x | w)], each importance sample drawing its own w.
#
# 1. a Bayesian pair written from scratch (nothing to subclass) trained and evaluated by ppvae;
# 2. the `bayes-vae` family: priors, posterior, the arviz export and the posterior's widths;
# 3. the experiment: full VB against the point-estimate VAE on fixed-binarized MNIST
#    (`ppvae.experiments.aevb_bayes`; quick by default and in CI, `--full` for the recorded budget).

# %%
import os
import sys
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import ppvae
from ppvae.bayes import inference_data, save_posterior_scales
from ppvae.experiments import aevb_bayes

FULL = "--full" in sys.argv[1:] or os.environ.get("PPVAE_FULL") == "1"
if os.environ.get("PPVAE_QUICK") == "1":
    FULL = False
BUDGET = "full" if FULL else "quick"
OUT = Path(os.environ.get("PPVAE_TUTORIAL_OUT", "runs/tutorial_08"))
torch.set_num_threads(1)
torch.manual_seed(0)

# %% [markdown]
# ## 1. Your own Bayesian pair
# Probabilistic PCA with a prior on its loading matrix W, a mean-field Normal posterior over W and
# an amortized linear encoder for z. W is sampled *before* the plate: one W per particle. Under
# ppvae's particle plate W gains a leading particle dimension, so the decoder uses `torch.matmul`
# (it broadcasts over it), not `F.linear`.
#
#     W   ~ N(0, I)               (D x d, global)
#     z_i ~ N(0, I_d)
#     x_i ~ N(W z_i, 0.3^2 I_D)

# %%
D, d, N = 6, 2, 500
W_true = torch.randn(D, d)
x_data = torch.randn(N, d) @ W_true.T + 0.3 * torch.randn(N, D)


class BayesianPPCA(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("zero", torch.zeros(()))

    def forward(self, x):
        W = pyro.sample("W", dist.Normal(self.zero, 1.0).expand([D, d]).to_event(2))  # (D, d) or (K, 1, D, d)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.zero, 1.0).expand([d]).to_event(1))  # (B, d) or (K, B, d)
            loc = torch.matmul(z, W.transpose(-1, -2).squeeze(-3) if W.dim() == 4 else W.T)
            pyro.sample("x", dist.Normal(loc, 0.3).to_event(1), obs=x)


class BayesianPPCAGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.W_loc = nn.Parameter(0.1 * torch.randn(D, d))
        self.W_log_scale = nn.Parameter(torch.full((D, d), -3.0))
        self.enc = nn.Linear(D, 2 * d)

    def forward(self, x):
        pyro.sample("W", dist.Normal(self.W_loc, self.W_log_scale.exp()).to_event(2))
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


model, guide = BayesianPPCA(), BayesianPPCAGuide()
result = ppvae.fit(model, guide, x_data, epochs=5 if BUDGET == "quick" else 200, lr=1e-2, batch_size=50,
                   objective="elbo-analytic", progress=False)
print(f"training loss per datapoint (N/B local terms + KL(q(W) || p(W)) once, over N): {result.history[-1]['train_loss']:.3f}")
x_test = torch.randn(100, d) @ W_true.T + 0.3 * torch.randn(100, D)
with torch.no_grad():
    elbo = ppvae.get_objective("elbo-analytic").bound(model, guide, x_test).mean()
    iwae = ppvae.get_objective("iwae", 50).bound(model, guide, x_test).mean()
log_px = ppvae.log_likelihood(model, guide, x_test, num_samples=500 if BUDGET == "quick" else 5000)
print(f"test: ELBO {elbo:.3f} <= IWAE_50 {iwae:.3f} <= log E_q(W)[p(x | W)] ~ {log_px.mean():.3f} nats")
print("posterior sd of W (true W is fixed, so it shrinks with N):", guide.W_log_scale.exp().mean().item())

# %% [markdown]
# ## 2. The `bayes-vae` family
# Every decoder weight and bias is a global latent with a N(0, s^2) prior (`prior_scale`) or
# Blundell et al.'s scale mixture (`prior="scale-mixture"`); the guide is the amortized encoder
# plus a mean-field Normal over the weights, whose means start as an ordinary network's
# initialisation and whose log-variances start at -10 (`init_log_var`). With
# `local_reparameterization=True` the decoder samples its pre-activations instead of its weights.
# KL warm-up (`kl_warmup_epochs`) multiplies the weight KL as it multiplies the KL of z.

# %%
digits = ppvae.load_dataset("digits")
bvae, bguide, config = ppvae.build("bayes-vae", digits.x_dim, {"z_dim": 2, "hidden": [64]}, seed=0)
print(config)
ppvae.fit(bvae, bguide, digits, epochs=3 if BUDGET == "quick" else 100, kl_warmup_epochs=1 if BUDGET == "quick" else 20,
          lr=3e-3, progress=False)
q = bguide.weights
kl = float(q.kl().detach())
print(f"{q.num_weights():,} decoder weights; KL(q(w) || p(w)) = {kl:.0f} nats, {kl / len(digits):.1f} per training digit")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import arviz as az
idata = inference_data(q, {"decoder.0.weight": [(0, 0), (1, 1)], "decoder.1.bias": [(0,), (27,)]}, num_draws=2000)
print(az.summary(idata, kind="stats"))
print(save_posterior_scales(q, OUT / "digits_posterior_std.png", init_log_var=config.init_log_var, prior_scales=[1.0]))

# %% [markdown]
# ## 3. Full VB against the point estimate (fixed-binarized MNIST)
# Same architecture, optimizer, epochs and KL warm-up; test and training log p(x) by importance
# sampling (the Bayesian model's is the posterior predictive), and the train-test gap of each.

# %%
res = aevb_bayes.run(BUDGET, OUT)
for name, r in res["models"].items():
    print(f"{name}: test log p(x) {r['test_log_px']:.2f} +- {r['test_log_px_se']:.2f}, train {r['train_log_px']:.2f}, "
          f"gap {r['train_test_gap']:.2f} nats, {r['epochs']} epochs")
print("figures:", *sorted(str(p) for p in (OUT / "bayes").glob("*.png")), sep="\n  ")
