"""alpha-GAN's encoder: an implicit posterior z = E(x), a Delta at site "z"."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae.models.alpha_gan import AlphaGANConfig
from ppvae.nn import mlp


class AlphaGANEncoder(nn.Module):
    """q(z | x) = delta(z - E(x)), alpha-GAN's implicit variational posterior::

        z = E(x)          a Delta: no density, so the KL(q(z | x) || p(z)) of the ELBO is replaced
                          by a code discriminator C that tells E's codes from prior draws

    Its aggregate q(z) is matched to the model's prior N(0, I) adversarially by the ``alpha-gan``
    scheme; the same network widths as the generator (``hidden``).

    References:
      Rosca, Lakshminarayanan, Warde-Farley & Mohamed (2017), Variational Approaches for
      Auto-Encoding Generative Adversarial Networks, Section 3.
    """

    def __init__(self, x_dim: int, config: AlphaGANConfig | None = None):
        super().__init__()
        self.config = config = config or AlphaGANConfig()
        self.net = mlp(int(x_dim), config.hidden, config.z_dim, config.activation)

    def forward(self, x: torch.Tensor) -> None:
        z = self.net(x)  # (B, z_dim)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(z).to_event(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code E(x), shape (B, z_dim)."""
        return self.net(x)
