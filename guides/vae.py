"""Amortized diagonal-Gaussian guides for the VAE family."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.direct import StoryModule
from ppvae.models.vae import VAEConfig, site_names
from ppvae.nn import GaussianNet


class GaussianEncoder(StoryModule):
    """Amortized guide, bottom-up through the stochastic layers::

        z_1 ~ q(z_1 | x)     = N(mu_1(x), diag sigma_1(x)^2)
        z_l ~ q(z_l | z_l-1) = N(mu_l(z_{l-1}), diag sigma_l(z_{l-1})^2)     l = 2, ..., L

    mirroring the decoder's widths (Burda et al. 2016, appendix). ``story(x, sample)`` is the
    program, which ``forward(x)`` runs with ``pyro.sample`` in the data plate; ``encode(x)`` returns the mean of q(z_1 | x).

    References:
      Kingma & Welling (2014), Auto-Encoding Variational Bayes.
      Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
    """

    def __init__(self, x_dim: int, config: VAEConfig | None = None):
        super().__init__()
        self.config = config = config or VAEConfig()
        self.names = site_names(len(config.z_dims))
        ins = (int(x_dim), *config.z_dims[:-1])
        self.layers = nn.ModuleList(
            GaussianNet(i, h, z, config.activation) for i, h, z in zip(ins, config.hidden, config.z_dims)
        )

    def story(self, x: torch.Tensor, sample) -> None:
        h = x
        for name, layer in zip(self.names, self.layers):
            h = sample(name, dist.Normal(*layer(h)).to_event(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of q(z_1 | x), shape (B, z_dims[0])."""
        return self.layers[0](x)[0]
