"""The adversarial autoencoder's encoder: deterministic (a Delta) or Gaussian."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppvae.models.aae import AAEConfig
from ppvae.nn import mlp


class AAEEncoder(nn.Module):
    """q(z | x), the AAE's encoder, whose aggregate q(z) the discriminator matches to p(z)::

        z = f(x)                               encoder="deterministic" (a Delta: the paper's default)
        z ~ N(mu(x), diag sigma(x)^2)          encoder="gaussian" (a density, so log p(x) can be
                                               estimated by importance sampling)

    It takes (and ignores) the label ``y`` so that model and guide share one signature.

    References:
      Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), Adversarial Autoencoders, Section 2.
    """

    def __init__(self, x_dim: int, config: AAEConfig | None = None):
        super().__init__()
        self.config = config = config or AAEConfig()
        width = config.z_dim * (2 if config.encoder == "gaussian" else 1)
        self.net = mlp(int(x_dim), config.hidden, width, config.activation, config.dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        h = self.net(x)
        with pyro.plate("data", x.shape[0]):
            if self.config.encoder == "deterministic":
                pyro.sample("z", dist.Delta(h).to_event(1))
            else:
                loc, raw = h.chunk(2, dim=-1)
                pyro.sample("z", dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code f(x), or the mean of q(z | x), shape (B, z_dim)."""
        h = self.net(x)
        return h if self.config.encoder == "deterministic" else h.chunk(2, dim=-1)[0]
