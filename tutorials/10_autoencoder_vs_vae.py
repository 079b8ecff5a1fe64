# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The plain autoencoder against the VAE: reconstruction error
#
# ppvae's `ae` family is a deterministic autoencoder written as a model/guide pair: the encoder is
# a Delta, z = f(x), and the model's code "prior" is flat (log density 0), so the pair's ELBO is
# log p(x | g(f(x))): minus the squared error (Gaussian decoder with a fixed sigma, up to a scale
# and a constant) or minus the cross-entropy (Bernoulli decoder). The ordinary single-phase
# training scheme (`ppvae.fit`, any of the three objectives) therefore trains it, and the
# trainer's `weight_decay` adds the l2 penalty of the AEVB report's eq. 15.
#
# The experiment (`ppvae.experiments.aevb_reconstruction`, the report's section 5) compares its
# test MSE with the VAE's for latent sizes 2, 10, 20 on MNIST and Frey Face. Quick by default and
# in CI; `--full` runs the budget recorded in `docs/aevb_report.md`.

# %%
import os
import sys
from pathlib import Path

import torch

import ppvae
from ppvae.experiments import aevb_reconstruction
from ppvae.plots import save_image_grid

FULL = "--full" in sys.argv[1:] or os.environ.get("PPVAE_FULL") == "1"
if os.environ.get("PPVAE_QUICK") == "1":
    FULL = False
BUDGET = "full" if FULL else "quick"
OUT = Path(os.environ.get("PPVAE_TUTORIAL_OUT", "runs/tutorial_10"))
torch.set_num_threads(1)

# %% [markdown]
# ## The family on its own
# Its bound is minus the reconstruction loss: check it by hand on a few digits.

# %%
data = ppvae.load_dataset("digits")
model, guide, _ = ppvae.build("ae", data.x_dim, {"z_dim": 4, "hidden": [64], "likelihood": "normal", "sigma": 1.0}, seed=0)
ppvae.fit(model, guide, data, epochs=2 if BUDGET == "quick" else 30, lr=3e-3, weight_decay=1.0, progress=False)
x = data.test[:5]
sse = ((model.decode(guide.encode(x)) - x) ** 2).sum(-1)
bound = ppvae.get_objective("elbo").bound(model, guide, x).detach()
print("ELBO                 ", bound)
print("-SSE/2 - D/2 log(2pi)", -sse / 2 - 0.5 * data.x_dim * torch.log(torch.tensor(2 * torch.pi)))
# samples: decoded draws from a Gaussian fitted to the training codes (an AE has no prior)
print(save_image_grid(ppvae.sample(model, 36, data.x_dim), data.image_shape, OUT / "ae_samples.png", upscale=3))

# %% [markdown]
# ## VAE against AE, three latent sizes, two datasets

# %%
res = aevb_reconstruction.run(BUDGET, OUT)
for name, r in res["models"].items():
    print(f"{name}: test MSE {r['mse']:.5f}")
print("figures:", OUT / "reconstruction" / "mse.png", *sorted((OUT / "reconstruction").glob("*_examples.png")), sep="\n  ")
