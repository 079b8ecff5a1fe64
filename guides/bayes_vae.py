"""The guide of the Bayesian-decoder VAE: an amortized encoder for z and a mean-field Normal over
the decoder's weights."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae.bayes import MeanFieldNormal, standard_init
from ppvae.models.bayes_vae import BayesVAEConfig
from ppvae.nn import GaussianNet


class BayesVAEGuide(nn.Module):
    """q(z, w | x) = q(w) prod_i q(z_i | x_i)::

        z_i ~ N(mu(x_i), diag sigma(x_i)^2)        amortized encoder (an MLP of the config's widths)
        w_j ~ N(m_j, exp(log_var_j))               every decoder weight and bias, independently

    The weight means start as an ordinary network's initial weights (``nn.Linear``'s init) and
    every log-variance at ``init_log_var``: training starts from a point-estimate decoder with a
    little noise, not from draws of the N(0, 1) prior (which would decode noise). With a Normal
    weight prior, ``elbo-analytic`` and ``iwae`` use the closed-form KL(q(w) || p(w)), counted
    once per minibatch (``ppvae.objectives``).

    References:
      Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix F.
    """

    def __init__(self, x_dim: int, config: BayesVAEConfig | None = None):
        super().__init__()
        self.config = config = config or BayesVAEConfig()
        self.encoder = GaussianNet(int(x_dim), config.hidden, config.z_dim, config.activation)
        self.weights = MeanFieldNormal(standard_init(config.decoder_sizes(int(x_dim)), "decoder"), config.init_log_var)

    def forward(self, x: torch.Tensor) -> None:
        loc, scale = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        self.weights()  # after z: the order the model samples them in (analytic KLs stay valid)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of q(z | x), shape (B, z_dim)."""
        return self.encoder(x)[0]
