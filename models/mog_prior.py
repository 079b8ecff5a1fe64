"""The VAE with a learned mixture-of-Gaussians prior: the cheap baseline to the VampPrior."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ppvae.distributions import DiagonalNormalMixture
from ppvae.errors import ConfigError
from ppvae.models.vae import VAE, VAEConfig
from ppvae.models.vampprior import PAPER_ARCHITECTURE

_SOFTPLUS_INV_1 = 0.5413248546129181  # softplus^{-1}(1): components start with unit scales


@dataclass
class MoGPriorConfig(VAEConfig):
    z_dims: tuple[int, ...] | None = None  # one layer: (40,) as in the VampPrior paper; two: IWAE's
    hidden: tuple[tuple[int, ...], ...] | None = None  # one layer: ((300, 300),); two: IWAE's
    num_components: int = 10  # C mixture components
    init_spread: float = 1.0  # component means start as N(0, init_spread^2) draws (breaks symmetry)

    def __post_init__(self):
        if self.stochastic_layers == 1 and (self.z_dims is None or len(self.z_dims) == 1):
            # the VampPrior paper's architecture, so the two learned priors compare like for like
            self.z_dims = self.z_dims if self.z_dims is not None else PAPER_ARCHITECTURE["z_dims"]
            self.hidden = self.hidden if self.hidden is not None else PAPER_ARCHITECTURE["hidden"]
        super().__post_init__()
        if int(self.num_components) < 1:
            raise ConfigError(f"num_components must be a positive integer, got {self.num_components!r}")
        if not self.init_spread >= 0:
            raise ConfigError(f"init_spread must be >= 0, got {self.init_spread!r}")
        self.num_components = int(self.num_components)


class MoGPriorVAE(VAE):
    """VAE whose top-layer prior is a learned mixture of C diagonal Gaussians::

        z_L ~ p(z_L) = sum_c pi_c N(mu_c, diag sigma_c^2)       pi, mu, sigma learned
        z_l ~ N(mu_l(z_{l+1}), diag sigma_l(z_{l+1})^2)         l = L-1, ..., 1
        x   ~ Bernoulli(logits = f(z_1))  or  N(mu(z_1), diag sigma(z_1)^2)

    The prior's parameters are ordinary module parameters trained with the rest of the ELBO:
    ``mixture_logits`` (pi = softmax), ``component_locs`` and ``component_scales`` (softplus of an
    unconstrained parameter, so sigma > 0).

    References:
      Tomczak & Welling (2018), VAE with a VampPrior. AISTATS (its mixture-of-Gaussians prior
      baseline).
    """

    def __init__(self, x_dim: int, config: MoGPriorConfig | None = None):
        config = config or MoGPriorConfig()
        super().__init__(x_dim, config)
        del self.prior_loc, self.prior_scale  # the standard-normal prior's buffers are unused here
        c, d = config.num_components, config.z_dims[-1]
        self.mixture_logits = nn.Parameter(torch.zeros(c))
        # distinct starting means: identical components would get identical gradients forever
        self.component_locs = nn.Parameter(torch.randn(c, d) * config.init_spread)
        self.component_raw_scales = nn.Parameter(torch.full((c, d), _SOFTPLUS_INV_1))

    def prior(self) -> DiagonalNormalMixture:
        """p(z_L) with batch shape () and event shape (d,)."""
        return DiagonalNormalMixture(self.component_locs, F.softplus(self.component_raw_scales), self.mixture_logits)

