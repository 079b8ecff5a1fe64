# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Auto-Encoding Variational Bayes: manifolds, samples x batch size, depth, activations, estimators A and B
#
# The experiments of a reproduction report of Kingma & Welling (2014) (sections 4.1-4.5), each a
# module of `ppvae.experiments` that trains its models into resumable run folders:
#
# | | module | what |
# |---|---|---|
# | 4.1 | `aevb_manifolds` | 2-D latent manifolds of MNIST and Frey Face |
# | 4.2 | `aevb_grid` | samples per datapoint L x minibatch size M on Frey Face, as heatmaps |
# | 4.3, 4.5 | `aevb_architecture` | encoder depth 1-4; tanh vs ReLU vs sigmoid (bound and seconds per epoch) |
# | 4.4 | `aevb_estimators` | estimator A (Monte Carlo KL) vs B (analytic KL) for z = 2..20, with gradient variance |
#
# By default (and in CI, `PPVAE_QUICK=1`) everything runs at the `quick` budget: a few hundred
# images, a couple of epochs, about a minute in all, which shows the machinery, not the results.
# `python tutorials/07_aevb_manifolds_and_estimators.py --full` runs the budgets recorded, with
# the results, in `docs/aevb_report.md` (each module also runs alone:
# `python -m ppvae.experiments.aevb_grid --budget full`).

# %%
import os
import sys
from pathlib import Path

import torch

from ppvae.experiments import aevb_architecture, aevb_estimators, aevb_grid, aevb_manifolds

FULL = "--full" in sys.argv[1:] or os.environ.get("PPVAE_FULL") == "1"
if os.environ.get("PPVAE_QUICK") == "1":
    FULL = False
BUDGET = "full" if FULL else "quick"
OUT = Path(os.environ.get("PPVAE_TUTORIAL_OUT", "runs/tutorial_07"))
torch.set_num_threads(1)  # the budgets are sized for one thread
print(f"budget: {BUDGET}; output: {OUT}")

# %% [markdown]
# ## 4.1 Learned manifolds
# A VAE with a 2-D latent; the decoder's means on a grid of latent points at equal prior mass.

# %%
manifolds = aevb_manifolds.run(BUDGET, OUT)
for name, r in manifolds["models"].items():
    print(f"{name}: test ELBO {r['test_elbo']:.2f} nats after {r['epochs']} epochs")
print("figures:", *sorted(str(p) for p in (OUT / "manifolds").glob("*.png")), sep="\n  ")

# %% [markdown]
# ## 4.2 Samples per datapoint L against minibatch size M (Frey Face)
# Equal passes over the data per cell: a larger M takes fewer steps.

# %%
grid = aevb_grid.run(BUDGET, OUT)
best = max(grid["cells"].values(), key=lambda c: c["test_elbo"])
print(f"best test ELBO {best['test_elbo']:.1f} at L={best['L']}, M={best['M']}; heatmaps: {OUT / 'grid' / 'grid_heatmaps.png'}")

# %% [markdown]
# ## 4.3 and 4.5 Encoder depth and activation functions

# %%
arch = aevb_architecture.run(BUDGET, OUT)
for part in ("depth", "activation"):
    for key, r in arch[part].items():
        print(f"{part} {key}: test ELBO {r['test_elbo']:.2f}, {r['cpu_s_per_epoch']:.2f} CPU s per epoch")

# %% [markdown]
# ## 4.4 Estimator A (Monte Carlo KL) against estimator B (analytic KL)
# Both estimators' gradients drawn at the same parameters: the trace of their covariance over the
# encoder's parameters.

# %%
est = aevb_estimators.run(BUDGET, OUT)
last = str(est["epochs"])
for name, r in est["models"].items():
    gv = r["gradient_variance"].get(last, {})
    ratio = gv["A"]["trace_cov"] / gv["B"]["trace_cov"] if gv else float("nan")
    print(f"{name}: test ELBO {r['test_elbo']:.2f}; gradient variance A / B = {ratio:.2f}")
print("figure:", OUT / "estimators" / "estimators.png")
