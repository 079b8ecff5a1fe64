# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Your own model/guide pair, trained and evaluated by ppvae
#
# ppvae trains and evaluates **any** Pyro model/guide pair that follows one convention: local
# latents and the observed site `"x"` sit inside `pyro.plate("data", ...)`, with event dimensions
# declared by `.to_event(...)`. Nothing to subclass, nothing to register.
#
# Here we write a VAE that ppvae does not ship: a **Laplace prior** on a 2-D latent and a
# Bernoulli decoder, with a Gaussian guide,
#
#     z ~ Laplace(0, 1)^2
#     x ~ Bernoulli(logits = f(z))
#
# train it with the importance-weighted bound, and compare it with ppvae's built-in VAE by
# importance-sampled marginal likelihood. Run it as a script (`python tutorials/01_your_own_pair.py`)
# or open it as a notebook with jupytext. `PPVAE_QUICK=1` makes it a seconds-long smoke run.

# %%
import os

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import ppvae

QUICK = os.environ.get("PPVAE_QUICK") == "1"
EPOCHS = 2 if QUICK else 60
OUT = os.environ.get("PPVAE_TUTORIAL_OUT", "runs/tutorial_01")
torch.manual_seed(0)

data = ppvae.load_dataset("digits")  # 8x8 digits from scikit-learn: offline, dynamically binarized
print(data)

# %% [markdown]
# ## The pair
# Plain `nn.Module`s whose `forward` is the Pyro program. Distribution parameters come from
# buffers (`prior_loc`, `prior_scale`) so the pair moves to a GPU with `.to("cuda")`.

# %%
class LaplaceVAE(nn.Module):
    def __init__(self, x_dim: int, z_dim: int = 2, hidden: int = 128):
        super().__init__()
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Laplace(self.prior_loc, self.prior_scale).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


class GaussianGuide(nn.Module):
    def __init__(self, x_dim: int, z_dim: int = 2, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.net(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1))


model, guide = LaplaceVAE(data.x_dim), GaussianGuide(data.x_dim)

# %% [markdown]
# ## Training
# `ppvae.fit` takes the pair as it is. The `iwae` objective with k=5 is the importance-weighted
# bound of Burda et al. (2016), scaled correctly to the dataset under minibatching.

# %%
result = ppvae.fit(model, guide, data, objective="iwae", num_particles=5, epochs=EPOCHS, lr=3e-3,
                   out_dir=f"{OUT}/laplace", progress=False)
print(result.history[-1])

# %% [markdown]
# ## Marginal likelihood, per datapoint
# `ppvae.log_likelihood` returns log p(x_i) for every test point (shape (N,)), estimated by
# importance sampling with the guide as proposal; `diagnostics=True` adds each point's Pareto-k.

# %%
x_test = data.test
res = ppvae.log_likelihood(model, guide, x_test, num_samples=200 if QUICK else 5000, diagnostics=True)
print(f"Laplace-prior VAE: log p(x) = {res.log_px.mean():.3f} nats "
      f"(Pareto-k > 0.7 for {(res.pareto_k > 0.7).float().mean():.1%} of test points)")

# %% [markdown]
# ## Against ppvae's built-in VAE with the same latent size

# %%
vae, enc, _ = ppvae.build("vae", data.x_dim, {"z_dims": [2], "hidden": [[128]]})
ppvae.fit(vae, enc, data, objective="iwae", num_particles=5, epochs=EPOCHS, lr=3e-3, progress=False)
ref = ppvae.log_likelihood(vae, enc, x_test, num_samples=200 if QUICK else 5000)
print(f"Gaussian-prior VAE: log p(x) = {ref.mean():.3f} nats")
diff = res.log_px - ref
print(f"per-datapoint difference: {diff.mean():.3f} +- {diff.std() / len(diff) ** 0.5:.3f} nats (paired)")

# %% [markdown]
# ## Pictures
# Samples from the prior predictive (any pair: `ppvae.sample` un-conditions `"x"`) and the posterior
# means of the test digits, coloured by label.

# %%
from ppvae.analysis import posterior_means
from ppvae.plots import save_image_grid, save_latent_scatter

print(save_image_grid(ppvae.sample(model, 64, data.x_dim), data.image_shape, f"{OUT}/laplace_samples.png", upscale=3))
z = posterior_means(guide, x_test)["z"]
print(save_latent_scatter(z, f"{OUT}/laplace_codes.png", labels=data.labels("test"), title="Laplace-prior VAE: E_q[z|x]"))
