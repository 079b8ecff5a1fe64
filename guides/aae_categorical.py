"""The encoder of the categorical adversarial autoencoder: q(y, z | x), a softmax class and a style."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae.models.aae_categorical import CategoricalAAEConfig
from ppvae.nn import GaussianNoise, mlp


class CategoricalAAEEncoder(nn.Module):
    """q(y, z | x), one MLP with two linear heads on its last hidden layer::

        y = softmax(g(x))      a Delta at a point of the simplex: the decoder reads the soft class,
                               the discriminator on y tells it from one-hot prior draws, which
                               pushes it to a vertex; argmax_k y_k is the predicted class or cluster
        z = f(x)               a Delta: the style

    With ``input_noise`` > 0 the MLP reads x + N(0, input_noise^2 I) in training (``train()`` mode)
    and x itself in evaluation, like dropout.

    References:
      Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), Adversarial Autoencoders, Figure 8.
    """

    def __init__(self, x_dim: int, config: CategoricalAAEConfig | None = None):
        super().__init__()
        self.config = config = config or CategoricalAAEConfig()
        self.noise = GaussianNoise(config.input_noise)  # no parameters: checkpoints without it still load
        self.net = mlp(int(x_dim), config.hidden, config.num_classes + config.z_dim, config.activation,
                       config.dropout)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of q(y | x) (B, K) and the style z (B, z_dim)."""
        return self.net(self.noise(x)).split([self.config.num_classes, self.config.z_dim], -1)

    def forward(self, x: torch.Tensor) -> None:
        logits, z = self.heads(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Delta(logits.softmax(-1)).to_event(1))
            pyro.sample("z", dist.Delta(z).to_event(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(y | x) as probabilities (B, K) and the style z (B, z_dim)."""
        logits, z = self.heads(x)
        return logits.softmax(-1), z

    @torch.no_grad()
    def classify(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """argmax_k q(y = k | x), (B,) int64: the predicted class or cluster."""
        return torch.cat([self.heads(x[i : i + batch_size])[0].argmax(-1) for i in range(0, x.shape[0], batch_size)])
