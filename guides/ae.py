"""The deterministic encoder of the plain autoencoder: z = f(x), a Delta."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae.models.ae import AEConfig
from ppvae.nn import mlp


class AEEncoder(nn.Module):
    """z = f(x), written as a Pyro guide: ``pyro.sample("z", Delta(f(x)))`` inside the data plate.
    Its log density is 0 at its one value, so the pair's ELBO is the reconstruction term alone
    (:class:`ppvae.models.ae.AEModel`); its "samples" are exact, with pathwise gradients into f.

    References:
      Hinton & Salakhutdinov (2006), Reducing the Dimensionality of Data with Neural Networks.
    """

    def __init__(self, x_dim: int, config: AEConfig | None = None):
        super().__init__()
        self.config = config = config or AEConfig()
        self.net = mlp(int(x_dim), config.hidden, config.z_dim, config.activation)

    def forward(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.net(x), event_dim=1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code f(x), shape (B, z_dim)."""
        return self.net(x)
