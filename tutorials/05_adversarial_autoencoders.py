# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Adversarial autoencoders: any pair, trained with a discriminator instead of a KL term
#
# An adversarial autoencoder (Makhzani et al. 2016) keeps the VAE's reconstruction term but
# replaces KL(q(z|x) || p(z)) with a GAN on the codes: a discriminator learns to tell draws of the
# prior p(z) (its *real* class) from codes z ~ q(z|x) of the data (its *fake* class), and the
# encoder learns to fool it, so that the aggregated posterior q(z) = E_x q(z|x) matches p(z).
#
# In ppvae this is a **training scheme**, not a special model: `ppvae.fit(model, guide, data,
# scheme="aae")` trains any pair that follows the convention. The scheme reads the pair through
# the same Pyro traces as the ELBO: codes from the guide, prior draws and log p(x|z) from the
# model. Below we train one pair twice, with the ELBO and adversarially, and compare them by
# importance-sampled log p(x) (possible because this guide has a density), then train the `aae`
# family against a 10-Gaussian mixture prior and look at the aggregated posterior.
# `PPVAE_QUICK=1` makes it a seconds-long smoke run.

# %%
import os

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import ppvae
from ppvae.plots import save_codes_against_priors, save_image_grid
from ppvae.schemes import AdversarialScheme

QUICK = os.environ.get("PPVAE_QUICK") == "1"
EPOCHS = 2 if QUICK else 60
OUT = os.environ.get("PPVAE_TUTORIAL_OUT", "runs/tutorial_05")
data = ppvae.load_dataset("digits")  # offline 8x8 digits, dynamically binarized, with labels

# %% [markdown]
# ## A pair of our own
# A Gaussian prior, a Bernoulli decoder and a Gaussian encoder, written as plain Pyro programs.

# %%
class Decoder(nn.Module):
    def __init__(self, x_dim=64, z_dim=2, hidden=128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))
        self.register_buffer("loc", torch.zeros(z_dim))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.loc, torch.ones_like(self.loc)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.net(z)).to_event(1), obs=x)


class Encoder(nn.Module):
    def __init__(self, x_dim=64, z_dim=2, hidden=128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        loc, log_scale = self.net(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


# %% [markdown]
# ## The same pair, two schemes
# `scheme="bound"` is the ELBO; `scheme="aae"` builds a discriminator for the 2-D code (2x1000
# ReLU by default; smaller here) and runs three phases per minibatch: reconstruction (encoder +
# decoder), discriminator, generator (encoder). Every phase's loss is in the progress bar and in
# `metrics.jsonl`; all three optimizers are checkpointed, and `resume=True` continues bit-identically.

# %%
pairs = {}
for label, scheme in (("VAE (ELBO)", "bound"), ("AAE", AdversarialScheme(hidden=(128, 128), noise_std=0.1))):
    torch.manual_seed(0)  # the same initial weights for both
    model, guide = Decoder(), Encoder()
    result = ppvae.fit(model, guide, data, scheme=scheme, epochs=EPOCHS, lr=1e-3, seed=0, progress=False,
                       out_dir=os.path.join(OUT, label.split()[0].lower()), overwrite=True)
    pairs[label] = (model, guide)
    print(label, {k: round(v, 3) for k, v in result.history[-1].items() if k.endswith("loss") or k.startswith("valid")})

# %% [markdown]
# ## Compared on the same footing: log p(x) by importance sampling
# Both guides have a density, so `ppvae.log_likelihood` estimates log p(x_i) for each test digit
# with the guide as proposal; Pareto-k says where that estimate cannot be trusted. (The paper's
# deterministic encoder has no density; its likelihood is then only measurable by the weak Parzen
# window.)

# %%
for label, (model, guide) in pairs.items():
    torch.manual_seed(0)
    report = ppvae.evaluate_pair(model, guide, data.test, num_samples=200 if QUICK else 2000)
    print(f"{label:>10}: log p(x) {report['log_px']:.2f} +- {report['log_px_se']:.2f} nats, "
          f"Pareto-k > 0.7 for {100 * report['pareto_k_share_above_0.7']:.0f}% of digits, "
          f"reconstruction SSE {report['reconstruction_sse']:.2f}")

# %% [markdown]
# ## The `aae` family against a mixture prior
# The family ships the paper's priors: Gaussian, ten Gaussians on a circle, and a swiss roll, and
# a deterministic or Gaussian encoder. Its default scheme is `aae`. The aggregated-posterior
# figure puts the test codes over draws of the prior.

# %%
model, guide, _ = ppvae.build("aae", data.x_dim, {"z_dim": 2, "prior": "mixture", "hidden": [256, 256]}, seed=0)
ppvae.fit(model, guide, data, epochs=EPOCHS, lr=5e-4, adam_betas=(0.5, 0.999), seed=0, progress=False)
codes = guide.encode(data.test)
figure = save_codes_against_priors([("AAE, 10-Gaussian mixture prior", codes, data.labels("test"), model.sample_prior(3000))],
                                   os.path.join(OUT, "aggregated_posterior.png"), ncols=1)
samples = save_image_grid(model.decode(model.sample_prior(64)), data.image_shape, os.path.join(OUT, "samples.png"), upscale=3)
print("wrote", figure, samples)

# %% [markdown]
# The full figure of the paper (AAEs and VAEs against all three priors, and the label-conditioned
# AAE) comes from `python -m ppvae.experiments.aae_figures`; `docs/adversarial.md` shows it on MNIST.
