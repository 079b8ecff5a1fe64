# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # alpha-GAN: an autoencoder with a GAN on the images and a GAN on the codes
#
# alpha-GAN (Rosca, Lakshminarayanan, Warde-Farley & Mohamed 2017) starts from the VAE's ELBO,
#
#     E_q(z|x)[log p(x | z)] - KL(q(z | x) || p(z)),
#
# and replaces both terms by things that need no density:
#
# - the encoder is **implicit**, z = E(x) (a Delta), so the KL term cannot be computed. A **code
#   discriminator** C tells the encoder's codes from prior draws z ~ N(0, I); its log-odds
#   log C / (1 - C) estimates log p(z) / q(z) (the density-ratio trick), and the encoder minimizes
#   -log C(z_hat) + log(1 - C(z_hat)), a Monte Carlo estimate of the KL;
# - the likelihood is **hybrid**: an L1 reconstruction term, lambda |x - G(E(x))|_1 (the log of a
#   Laplace likelihood), plus a **data discriminator** D that tells real images from reconstructions
#   G(E(x)) *and* from samples G(z), z ~ p(z), as in a GAN.
#
# In ppvae the model (z ~ N(0, I), x ~ p(x | z) with a generator G) and the encoder are an ordinary
# Pyro model/guide pair, the `alpha-gan` family; the two discriminators belong to the `alpha-gan`
# **training scheme**, which gives each of the four networks its own Adam. We train it on the
# 8x8 digits that ship with scikit-learn (offline); set `PPVAE_DATA` to a folder holding `MNIST/raw`
# for the full run on MNIST. `PPVAE_QUICK=1` makes it a seconds-long smoke run; the full run on the
# digits took about 4 CPU-minutes on one thread (alpha-GAN 1.2 s per epoch, the VAE 0.1 s).

# %%
import os
import time
from pathlib import Path

import pyro
import torch
from torch.nn import functional as F

import ppvae
from ppvae.analysis import posterior_means
from ppvae.errors import ConfigError
from ppvae.nn import mlp
from ppvae.plots import save_codes_against_priors, save_image_grid, save_reconstructions, save_training_curves
from ppvae.schemes import AlphaGANScheme
from ppvae.schemes.alpha_gan import code_discriminator_loss, reconstruction_l1

QUICK = os.environ.get("PPVAE_QUICK") == "1"
OUT = Path(os.environ.get("PPVAE_TUTORIAL_OUT", "runs/tutorial_06"))
ROOT = os.environ.get("PPVAE_DATA")
torch.set_num_threads(1)  # small networks: extra threads cost more than they give
torch.manual_seed(0)

NAME = "mnist" if ROOT and not QUICK else "digits"
data = ppvae.load_dataset(NAME, ROOT, limit=300 if QUICK else None)
MNIST = NAME == "mnist"
EPOCHS = 2 if QUICK else (30 if MNIST else 150)
UPSCALE = 1 if MNIST else 4
print(data)

# %% [markdown]
# ## The pair
# The encoder and the generator have the widths of ppvae's default VAE (the IWAE paper's
# 1-layer net: 200-200 tanh), so that alpha-GAN and the VAE below compare "with the same
# networks". The code size is 50 on MNIST (yjchoe's reimplementation) but **8 on the digits**:
# with 1,397 training images a 50-dimensional aggregate posterior cannot be made to look like
# N(0, I) (we tried: after 100 epochs a classifier trained afterwards still told the codes from
# prior draws 99% of the time, and samples from the prior looked much less like digits). `noise_std` adds Gaussian noise to D's
# inputs, real and fake alike; see the pitfalls at the end for why binary data needs it.

# %%
OPTIONS = {"z_dim": 50 if MNIST else 8, "hidden": [200, 200], "activation": "tanh", "noise_std": 0.3}
model, guide, config = ppvae.build("alpha-gan", data.x_dim, OPTIONS, seed=0)
x = data.train[:5]
for name, program in (("model", model), ("guide", guide)):
    tr = pyro.poutine.trace(program).get_trace(x)
    print(name, {n: f"{type(s['fn']).__name__} {tuple(s['value'].shape)}" for n, s in tr.nodes.items() if s["type"] == "sample"})

# %% [markdown]
# ## The scheme: four networks, four phases
# Per minibatch, in the order of the paper's Algorithm 1, with z_hat = E(x), x_rec the mean of
# p(x | z_hat), z ~ p(z) from the model's prior and x_gen the mean of p(x | z):
#
# | phase (group) | loss | what it does |
# |---|---|---|
# | `encoder` | lambda L1(x, x_rec) - log C(z_hat) + log(1 - C(z_hat)) | reconstruct, and move codes where C sees prior draws |
# | `generator` | lambda L1(x, x_rec) - log D(x_rec) - log D(x_gen) | reconstruct, and make reconstructions and samples look real |
# | `discriminator` | -log D(x) - log(1 - D(x_rec)) - log(1 - D(x_gen)) | data real, reconstructions and samples fake |
# | `code_discriminator` | -log C(z) - log(1 - C(z_hat)) | **prior draws real**, codes fake |
#
# The encoder and generator phases run `autoencoder_steps` = 2 times per D/C step
# (victor-shepardson's reimplementation), each phase recomputing its inputs from the networks as
# they are when it runs. L1 is the mean absolute error per pixel, so lambda = 20 means the same
# on 8x8 digits as on MNIST. All four Adams use betas (0.5, 0.9). Every one of these is an option
# of the family (`ppvae train --model alpha-gan --set reconstruction_weight=40`) or of the scheme
# (`AlphaGANScheme(reconstruction_weight=40)`), which wins.

# %%
scheme = AlphaGANScheme()  # what ppvae.fit would build from the model's default_scheme, "alpha-gan"
t0 = time.perf_counter()
result = ppvae.fit(model, guide, data, scheme=scheme, epochs=EPOCHS, batch_size=64, seed=0,
                   out_dir=OUT / "alpha_gan", overwrite=True, progress=False)
seconds = time.perf_counter() - t0
last = result.history[-1]
print(f"{EPOCHS} epochs in {seconds:.0f} s ({seconds / EPOCHS:.2f} s per epoch, validation included)")
print({k: round(v, 3) for k, v in last.items() if k.endswith(("loss", "term", "accuracy", "l1", "reconstruction"))})
print(scheme.describe())
print(save_training_curves(result.history, OUT / "alpha_gan_curves.png"))

# %% [markdown]
# Reading the curves: `valid_l1` (the monitored metric, per image, summed over pixels) should fall
# steadily. The two accuracies are measured on the minibatch each discriminator is about to learn
# from, *after* the encoder and generator have just been stepped against it on that same batch, so
# they read low: the code discriminator's sits near 50%, sometimes below, without anything being
# wrong. An accuracy pinned near 100% means that discriminator has won and its opponent gets
# little signal.

# %% [markdown]
# ## Samples and reconstructions

# %%
with torch.no_grad():
    torch.manual_seed(1)
    samples = model.decode(model.sample_prior(64))  # x_gen: the mean of p(x | z), z ~ N(0, I)
    x_test = data.test[:32]
    x_rec = model.decode(guide.encode(x_test))
print(save_image_grid(samples, data.image_shape, OUT / "alpha_gan_samples.png", upscale=UPSCALE))
print(save_reconstructions(x_test, x_rec, data.image_shape, OUT / "alpha_gan_reconstructions.png", n=32, upscale=UPSCALE))

# %% [markdown]
# ## Did the code GAN match q(z) to the prior?
# The code discriminator's own accuracy is no answer (see above). Train a *fresh* classifier,
# after training, between the codes of the held-out digits and draws from N(0, I): near 50%
# accuracy means the aggregate posterior looks like the prior, and prior samples then decode to
# digit-like images. (The codes' first two coordinates are drawn after the VAE below.)

# %%
def code_classifier_accuracy(z_train, z_test, steps):
    """A fresh MLP told codes (fake) from N(0, I) draws (real), scored on held-out codes."""
    torch.manual_seed(0)
    clf = mlp(z_train.shape[1], (256, 256), 1, "leaky_relu")
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    for _ in range(steps):
        real = torch.randn(256, z_train.shape[1])
        fake = z_train[torch.randint(0, z_train.shape[0], (256,))]
        loss = code_discriminator_loss(clf(real).squeeze(-1), clf(fake).squeeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        prior_right = (clf(torch.randn(z_test.shape[0], z_test.shape[1])) > 0).float().mean()
        codes_right = (clf(z_test) < 0).float().mean()
    return float(prior_right + codes_right) / 2


with torch.no_grad():
    z_train, z_test = guide.encode(data.train), guide.encode(data.test)
print(f"codes: mean {z_train.mean(0).abs().mean():.2f} (|mean| per dimension), std {z_train.std(0).mean():.2f} "
      f"(per dimension; the prior's: 0, 1)")
print(f"a fresh classifier tells test codes from prior draws {code_classifier_accuracy(z_train, z_test, 200 if QUICK else 2000):.0%} "
      "of the time (50%: indistinguishable)")

# %% [markdown]
# ## Against a VAE with the same networks
# ppvae's VAE with the same code size and the same 200-200 tanh encoder and decoder, trained with
# the ELBO for the same epochs. Its reconstructions are scored by the same L1 error (at the
# posterior mean); its samples are the means of p(x | z), z ~ N(0, I), as alpha-GAN's.

# %%
vae, encoder, _ = ppvae.build("vae", data.x_dim, {"z_dims": [OPTIONS["z_dim"]], "hidden": [OPTIONS["hidden"]],
                                                  "activation": "tanh"}, seed=0)
t0 = time.perf_counter()
vae_result = ppvae.fit(vae, encoder, data, epochs=EPOCHS, batch_size=64, seed=0, out_dir=OUT / "vae", overwrite=True,
                       progress=False)
print(f"VAE: {(time.perf_counter() - t0) / EPOCHS:.2f} s per epoch (alpha-GAN: {seconds / EPOCHS:.2f}; its D and C are "
      "the widest of the six networks)")
with torch.no_grad():
    def vae_reconstruct(x):  # the mean of p(x | z) at the mean of q(z | x), as alpha-GAN's at z = E(x)
        return vae.decode(posterior_means(encoder, x, num_particles=1)[vae.names[0]])

    vae_rec = vae_reconstruct(x_test)
    vae_l1 = float(reconstruction_l1(data.test, vae_reconstruct(data.test)).mean())
    gan_l1 = float(reconstruction_l1(data.test, model.decode(guide.encode(data.test))).mean())
    torch.manual_seed(1)
    vae_samples = ppvae.sample(vae, 64, data.x_dim)
print(f"test L1 per image: alpha-GAN {gan_l1:.2f}, VAE {vae_l1:.2f} (of {data.x_dim} pixels)")
print(save_image_grid(vae_samples, data.image_shape, OUT / "vae_samples.png", upscale=UPSCALE))
print(save_reconstructions(x_test, vae_rec, data.image_shape, OUT / "vae_reconstructions.png", n=32, upscale=UPSCALE))
with torch.no_grad():
    vae_means = posterior_means(encoder, data.train, num_particles=1)[vae.names[0]]
prior = torch.randn(2000, z_train.shape[1])
labels = data.labels("train")
print(save_codes_against_priors([("alpha-GAN: E(x), training digits", z_train[:, :2], labels, prior[:, :2]),
                                 ("VAE: mean of q(z | x)", vae_means[:, :2], labels, prior[:, :2])],
                                OUT / "codes_against_the_prior.png", ncols=2))

# %% [markdown]
# The VAE's samples are the blurry pixel probabilities of a model trained for likelihood; alpha-GAN's
# generator is pushed by D toward near-binary images, and its L1-trained reconstructions are
# sharper. The scatter shows the first two code coordinates over grey prior draws: with no density
# anywhere, the code GAN alone spreads alpha-GAN's codes over the prior's bulk (a little narrower
# than N(0, I), as the standard deviations printed above say). Judge the samples by eye
# here; by numbers, with the Parzen-window and classifier-based sample scores of `ppvae evaluate`,
# since alpha-GAN has no likelihood (last pitfall).

# %% [markdown]
# ## Pitfalls
# **1. The code discriminator's classes.** Prior draws are C's *real* class. The first arXiv
# version of the paper printed C's loss with the classes swapped, and one public MNIST
# reimplementation trains the encoder toward C(z_hat) = 1 while also training C toward 1 on z_hat:
# the code term then helps the encoder instead of opposing it. The tell is what C converges to.
# With prior p = N(0, 1) and codes q = N(1, 1/4), the right loss drives C to p / (p + q); swapping
# its arguments drives it to q / (p + q):

# %%
t = torch.tensor([[-1.0], [0.0], [1.0], [2.0]])
p, q = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(1.0, 0.5)
print("p / (p + q):", torch.sigmoid(p.log_prob(t) - q.log_prob(t)).squeeze(-1).numpy().round(2))
for swapped in (False, True):
    torch.manual_seed(0)
    C = mlp(1, (32, 32), 1, "tanh")
    opt = torch.optim.Adam(C.parameters(), lr=3e-3)
    for _ in range(100 if QUICK else 1000):
        prior_draws, codes = torch.randn(512, 1), 1.0 + 0.5 * torch.randn(512, 1)
        real, fake = (codes, prior_draws) if swapped else (prior_draws, codes)
        loss = code_discriminator_loss(C(real).squeeze(-1), C(fake).squeeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        print("swapped" if swapped else "right  ", "C(z):", torch.sigmoid(C(t)).squeeze(-1).numpy().round(2))

# %% [markdown]
# **2. No batch norm in C.** Batch norm computes its statistics over a batch that is all prior
# draws or all codes, which hands C the class through the batch statistics; ppvae's C is a plain
# MLP (`code_discriminator_hidden`, leaky ReLU).
#
# **3. Binary data and D.** Dynamically binarized images are exactly 0 or 1; the generator's
# outputs are probabilities strictly between. An MLP D can learn to tell them apart by that alone
# and win outright (accuracy near 100%, generator loss climbing). Gaussian noise on D's inputs
# (`noise_std`, both classes) hides the difference; on grey-level data it is not needed. On these
# digits (z 8, 100 epochs, one seed) D's accuracy stayed near 93% without it and the validation L1
# per image ended at 9.9, against 8.0 with `noise_std=0.3`, and the samples were visibly noisier.
#
# **4. lambda's scale.** lambda multiplies the mean absolute error *per pixel* (as in both public
# reimplementations), not per image: the per-image L1 logged as `l1_reconstruction` and `valid_l1`
# is x_dim times larger than what lambda multiplies.
#
# **5. The encoder's code term is unbounded.** The paper's form -log C + log(1 - C) is minus C's
# logit: when C is confidently wrong the encoder's gradient does not saturate, and codes can
# overshoot into regions C has never seen. `code_loss="non-saturating"` (-log C) is the tamer
# alternative.
#
# **6. No likelihood.** The encoder is a Delta, so importance sampling has no proposal density and
# `ppvae.log_likelihood` refuses the pair, saying why:

# %%
try:
    ppvae.log_likelihood(model, guide, data.test[:10], num_samples=10)
except ConfigError as e:
    print("ConfigError:", str(e)[:300])
