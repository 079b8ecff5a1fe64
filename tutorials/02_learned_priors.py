# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Learned priors: standard VAE vs VampPrior vs implicit optimal prior
#
# The ELBO's KL term pulls every posterior q(z|x) towards the prior p(z). With the fixed
# p(z) = N(0, I) this over-regularizes: the prior that maximizes the expected ELBO is the
# *aggregated posterior* q(z) = E_data[q(z|x)] (Hoffman & Johnson 2016). Two ways to get near it:
#
#     VampPrior (Tomczak & Welling 2018):  p(z) = (1/K) sum_k q(z | u_k)      K learned pseudo-inputs u_k
#     IOP (Takahashi et al. 2019):         p(z) = N(z; 0, I) exp(T(z))        T(z) ~ log q(z) / N(z; 0, I)
#
# where T is a classifier's log-odds between codes z ~ q(z|x) and draws from N(0, I) (the
# density-ratio trick), retrained after every ELBO epoch. Here the three priors share one encoder
# and one decoder, trained on the 8x8 digits that ship with scikit-learn (offline), and we compare
# them by importance-sampled log p(x), per test digit. `PPVAE_QUICK=1` makes this a seconds-long
# smoke run; the full run takes a few minutes on one CPU thread. The paper-scale comparison (MNIST,
# Frey Face, z=40, 3x500 tanh) is `ppvae reproduce iop-comparison` (docs/iop_comparison.md).

# %%
import os
import time

import torch

import ppvae
from ppvae.analysis import posterior_means
from ppvae.experiments import iop_toy
from ppvae.plots import save_image_grid, save_latent_scatter

QUICK = os.environ.get("PPVAE_QUICK") == "1"
EPOCHS = 2 if QUICK else 150
EVAL_K = 50 if QUICK else 1000  # importance samples per test digit
OUT = os.environ.get("PPVAE_TUTORIAL_OUT", "runs/tutorial_02")
torch.set_num_threads(1)  # small networks: extra threads cost more than they give
torch.manual_seed(0)

data = ppvae.load_dataset("digits")  # 1397 train / 200 valid / 200 test, dynamically binarized
print(data)

# %% [markdown]
# ## Three pairs, one architecture
# A 2-D latent so the codes and the priors can be looked at directly. The families' own options
# are the only difference: K=50 pseudo-inputs for the VampPrior (a few hundred training digits per
# class would make K=500 mostly duplicates), a smaller T network for the IOP.

# %%
SHARED = {"z_dims": [2], "hidden": [[256, 256]], "activation": "tanh"}
OPTIONS = {
    "vae": SHARED,
    "vampprior": {**SHARED, "num_pseudo_inputs": 50},
    "iop": {**SHARED, "ratio_hidden": [128, 128, 128], "ratio_epochs": 2 if QUICK else 5},
}
pairs = {}
for name, options in OPTIONS.items():
    torch.manual_seed(0)
    model, guide, _ = ppvae.build(name, data.x_dim, options)
    pairs[name] = (model, guide)
    print(f"{name:10s} decoder parameters {sum(p.numel() for p in model.decoder.parameters()):,}, "
          f"encoder parameters {sum(p.numel() for p in guide.parameters()):,}")

# %% [markdown]
# ## Training
# The same optimizer for all three: the analytic-KL ELBO (for the IOP, the KL to N(0, I) plus the
# Monte Carlo term E_q[T(z)]; for the VampPrior, a Monte Carlo KL), early stopping on the
# validation bound. `ppvae.fit` calls the IOP's `after_epoch` hook to train T between ELBO epochs.

# %%
for name, (model, guide) in pairs.items():
    t0 = time.perf_counter()
    fit = ppvae.fit(model, guide, data, objective="elbo-analytic", epochs=EPOCHS, lr=1e-3, batch_size=100,
                    early_stopping_patience=20, out_dir=f"{OUT}/{name}", progress=False)
    last = fit.history[-1]
    extra = f", T accuracy {last['ratio_accuracy']:.2f}" if "ratio_accuracy" in last else ""
    print(f"{name:10s} {len(fit.history)} epochs, best valid ELBO {fit.best_valid:.2f}{extra} "
          f"({time.perf_counter() - t0:.0f} s)")

# %% [markdown]
# ## Marginal likelihood, per test digit
# `ppvae.log_likelihood` gives log p(x_i) for each digit. All three models see the same digits, so
# the comparison is *paired*: the standard error of the mean per-digit difference is much smaller
# than that of either mean.

# %%
x_test = data.test
log_px = {}
for name, (model, guide) in pairs.items():
    torch.manual_seed(1)
    log_px[name] = ppvae.log_likelihood(model, guide, x_test, num_samples=EVAL_K).double()
    print(f"{name:10s} log p(x) = {log_px[name].mean():8.3f} +- {log_px[name].std() / len(x_test) ** 0.5:.3f} nats")
for name in ("vampprior", "iop"):
    d = log_px[name] - log_px["vae"]
    print(f"{name} - vae: {d.mean():+.3f} +- {d.std() / len(d) ** 0.5:.3f} nats per digit (paired)")

# %% [markdown]
# ## T is an estimate: the IOP's prior is not exactly normalized
# N(0, I) exp(T(z)) integrates to Z = E_N(0,I)[exp T(z)], which is 1 only if T were the exact log
# ratio. The log-likelihood above is that of an unnormalized prior: it is too high by log Z when
# log Z > 0 (and too low when log Z < 0). `log_normalizer()` estimates log Z by Monte Carlo; subtract
# it (or call `normalize_prior()`) before comparing with properly normalized models.

# %%
iop_model = pairs["iop"][0]
log_z = iop_model.log_normalizer(10_000 if QUICK else 200_000)
print(f"IOP log Z = {log_z:.4f}; IOP log p(x) with the prior normalized: {log_px['iop'].mean() - log_z:.3f} nats")

# %% [markdown]
# ## Samples from each prior, and the codes of the test digits
# Each prior draws z (the IOP by sampling-importance-resampling from N(0, I) exp T, since
# `ppvae.sample` would ignore the factor), and the shared decoder maps it to pixel probabilities.

# %%
with torch.no_grad():
    prior_z = {
        "vae": torch.randn(64, 2),
        "vampprior": pairs["vampprior"][0].prior().sample((64,)),
        "iop": iop_model.sample_latents(64),
    }
for name, (model, guide) in pairs.items():
    print(save_image_grid(model.decode(prior_z[name]), data.image_shape, f"{OUT}/samples_{name}.png", upscale=3))
    z = posterior_means(guide, x_test)["z"]
    print(save_latent_scatter(z, f"{OUT}/codes_{name}.png", labels=data.labels("test"), title=f"{name}: E_q[z|x], test digits"))

# %% [markdown]
# ## The one-hot toy of the IOP paper
# Four one-hot inputs, a 2-D latent. The N(0, I) prior pulls the four posteriors onto one another;
# the implicit optimal prior lets them stay apart (higher separation). The IOP's log p(x) is again
# reported with and without its log Z.

# %%
toy = iop_toy.run(f"{OUT}/toy", epochs=3 if QUICK else 60, repeats=100 if QUICK else 500)
for name in ("vae", "iop"):
    print(f"{name}: separation {toy[name]['separation']:.2f}, log p(x) {toy[name]['log_px']:.3f}")
print(f"IOP toy: log Z {toy['iop']['prior_log_z']:.3f}, normalized log p(x) {toy['iop']['log_px_normalized']:.3f} "
      "(a normalized model of four equally likely inputs has at most log 1/4 = -1.386)")
