# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A categorical latent: the semi-supervised adversarial autoencoder
#
# Makhzani et al. (2016, Section 5) split the code of an adversarial autoencoder in two: a
# **class** y, a point of the simplex that a discriminator pushes towards one-hot draws of a
# categorical prior, and a **style** z, pushed towards a Gaussian by a second discriminator. The
# decoder reads both. A few labelled examples tie the classes to the labels: after the
# reconstruction phase and the two regularization phases, a **supervised phase** lowers the
# cross-entropy of q(y | x) on a labelled minibatch. Without it, y is a cluster (Section 6).
#
# In ppvae the model is the generative story and the guide the encoder, as for every pair::
#
#     y ~ OneHotCategorical(1/K, ..., 1/K),   z ~ N(0, I),   x ~ p(x | y, z)        (the model)
#     y = softmax(g(x)),   z = f(x)                                                 (the guide: two Deltas)
#
# and the `aae-categorical` scheme trains it. The labelled examples are a fixed, balanced subset
# of the **training** split (`--set labels=100`: 10 per class), and the model kept is the one with
# the lowest **validation** error, so the test set is only ever used to report. Here: the offline
# 8x8 digits with 100 labels; `PPVAE_QUICK=1` makes it a seconds-long smoke run (its numbers mean
# nothing). The MNIST tables are made by `python -m ppvae.experiments.aae_categorical`
# (docs/aae_categorical.md).

# %%
import os

import torch

import ppvae
from ppvae.checkpoint import load
from ppvae.plots import save_codes_against_priors, save_style_content_grid
from ppvae.semisupervised import class_probabilities, classification_error, confusion_matrix, save_confusion_matrix

torch.set_num_threads(1)
QUICK = os.environ.get("PPVAE_QUICK") == "1"
EPOCHS = 2 if QUICK else 150
OUT = os.environ.get("PPVAE_TUTORIAL_OUT", "runs/tutorial_09")
data = ppvae.load_dataset("digits")  # 1397 train / 200 valid / 200 test, with labels
print(data)

# %% [markdown]
# ## Train with 100 labels
# One call: the family's default scheme is `aae-categorical`. Six phases per minibatch, each
# logged: reconstruction, discriminator and generator on y, discriminator and generator on z,
# supervised. Every network has its own Adam; `metrics.jsonl` holds every phase's loss, both
# discriminators' accuracies and the validation error that picks `best.pt`.

# %%
options = {"labels": 100, "z_dim": 4, "hidden": [256, 256]}
model, guide, config = ppvae.build("aae-categorical", data.x_dim, options, seed=0)
result = ppvae.fit(model, guide, data, epochs=EPOCHS, lr=1e-3, adam_betas=(0.5, 0.999), batch_size=100, seed=0,
                   progress=False, out_dir=os.path.join(OUT, "semi-100"), overwrite=True)
best = min(result.history, key=lambda h: h["valid_error"])
print(f"best validation error {100 * best['valid_error']:.1f}% at epoch {best['epoch']}")

# %% [markdown]
# ## Test error and confusion matrix, at the epoch chosen on the validation split

# %%
ckpt = load(os.path.join(OUT, "semi-100", "best.pt"))
model.load_state_dict(ckpt["model_state"])
guide.load_state_dict(ckpt["guide_state"])
predicted = class_probabilities(guide, data.test).argmax(-1)
labels = data.labels("test")
print(f"test error {100 * classification_error(predicted, labels):.1f}% with 100 labels")
matrix = confusion_matrix(predicted, labels, 10)
print(matrix)
print("wrote", save_confusion_matrix(matrix, os.path.join(OUT, "confusion.png"), title="digits, 100 labels: test"))

# %% [markdown]
# ## Style and content
# Each row fixes one style z ~ p(z); each column gives the decoder another class y: the class
# carries the digit, the style its slant and thickness (Makhzani et al. 2016, Figure 8).

# %%
torch.manual_seed(0)
styles = model.sample_prior(8)["z"]
grid = model.decode(torch.arange(10).repeat(8), styles.repeat_interleave(10, 0))
print("wrote", save_style_content_grid(grid, data.image_shape, os.path.join(OUT, "style_content.png"), upscale=3))

# %% [markdown]
# ## A 2-D embedding with cluster heads
# For dimensionality reduction (Section 7) the class picks one of K learned **cluster heads** in a
# 2-D style space, and the decoder reads head + style: `--set cluster_heads=true --set z_dim=2`.
# A cost pushes every two heads at least eta apart (`head_distance`). The test digits' embeddings
# W_C^T y + z, coloured by label, over draws of the model's own prior in that space:

# %%
heads, heads_guide, _ = ppvae.build("aae-categorical", data.x_dim, {**options, "cluster_heads": True, "z_dim": 2}, seed=0)
ppvae.fit(heads, heads_guide, data, epochs=EPOCHS, lr=1e-3, adam_betas=(0.5, 0.999), seed=0, progress=False)
with torch.no_grad():
    probs, z = heads_guide.encode(data.test)
    draws = heads.sample_prior(2000)
    panel = ("cluster heads + 2-D style, 100 labels", heads.embed(probs, z), data.labels("test"), heads.embed(draws["y"], draws["z"]))
print("wrote", save_codes_against_priors([panel], os.path.join(OUT, "embedding.png"), ncols=1))
print(f"cluster-head penalty {float(heads.penalty().detach()):.3f} (0: every two heads at least eta apart)")
