"""The adversarial autoencoder's generative model: a fixed prior on z and a decoder."""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppvae.distributions import BernoulliLogits
from ppvae.errors import ConfigError
from ppvae.nn import mlp
from ppvae.priors import CircleMixture, SwissRoll

PRIORS = ("gaussian", "mixture", "swiss-roll")
ENCODERS = ("deterministic", "gaussian")
CONDITIONALS = ("none", "discriminator", "decoder")


@dataclass
class AAEConfig:
    z_dim: int = 8  # the paper's likelihood experiments on MNIST (2 for the prior figures)
    hidden: tuple[int, ...] = (1000, 1000)  # encoder, decoder and discriminator widths (the paper's)
    activation: str = "relu"
    prior: str = "gaussian"  # "gaussian" | "mixture" (10 Gaussians on a circle) | "swiss-roll"; the last two in 2-D
    prior_scale: float = 1.0  # standard deviation of the Gaussian prior (one reproduction used 5)
    encoder: str = "deterministic"  # "deterministic" (z = f(x), a Delta) or "gaussian" (z ~ N(mu(x), sigma(x)^2))
    likelihood: str = "bernoulli"  # "bernoulli" for binary data, "normal" (learned variance) for continuous
    conditional: str = "none"  # "none"; "discriminator": z ~ p(z | y), the label's region of the prior;
    #                            "decoder": x ~ p(x | z, y), so z keeps only the style
    num_classes: int = 10
    min_scale: float = 1e-3  # floor of the Gaussian decoder's and encoder's standard deviations
    dropout: float = 0.0  # dropout after each hidden layer of encoder and decoder, in training only (the
    #                       public reimplementation with the paper's Parzen figure used it; 0.1 = keep 0.9)

    def __post_init__(self):
        for name, allowed in (("prior", PRIORS), ("encoder", ENCODERS), ("conditional", CONDITIONALS),
                              ("likelihood", ("bernoulli", "normal"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"aae option {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        self.z_dim, self.hidden = int(self.z_dim), tuple(int(h) for h in self.hidden)
        if self.prior != "gaussian" and self.z_dim != 2:
            raise ConfigError(f"the {self.prior} prior is 2-D: set z_dim=2 (got {self.z_dim})")
        if self.conditional == "discriminator" and self.prior == "gaussian":
            raise ConfigError("conditional='discriminator' gives each class its own region of the prior: "
                              "use prior='mixture' or 'swiss-roll'")
        if self.prior != "gaussian" and self.num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout is a probability in [0, 1), got {self.dropout!r}")
        if not self.prior_scale > 0:
            raise ConfigError(f"prior_scale must be positive, got {self.prior_scale}")


class AAEModel(nn.Module):
    """The generative story of an adversarial autoencoder (Makhzani et al. 2016)::

        z ~ p(z)          N(0, s^2 I), 10 Gaussians on a circle, or a swiss roll     (conditional="none")
        z ~ p(z | y)      the label's mixture component / roll segment               (conditional="discriminator")
        x ~ p(x | z)      Bernoulli(logits = f(z)) or N(mu(z), sigma(z)^2)
        x ~ p(x | z, y)   the decoder also sees the one-hot label                   (conditional="decoder")

    The prior is fixed; what makes it an AAE is the training: the ``aae`` scheme
    (:class:`ppvae.schemes.AdversarialScheme`) matches the aggregated posterior q(z) to p(z) with a
    discriminator instead of the ELBO's KL term. Where the prior has a density (Gaussian, mixture)
    and the encoder is Gaussian, ``ppvae.log_likelihood`` scores it like any VAE.

    References:
      Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), Adversarial Autoencoders, ICLR workshop.
    """

    default_scheme = "aae"  # ppvae.fit trains it adversarially unless told otherwise

    def __init__(self, x_dim: int, config: AAEConfig | None = None):
        super().__init__()
        self.config = config = config or AAEConfig()
        self.x_dim = int(x_dim)
        extra = config.num_classes if config.conditional == "decoder" else 0
        out = self.x_dim if config.likelihood == "bernoulli" else 2 * self.x_dim
        self.decoder = mlp(config.z_dim + extra, config.hidden, out, config.activation, config.dropout)
        self.register_buffer("prior_loc", torch.zeros(config.z_dim))  # a device anchor for the priors

    @property
    def uses_labels(self) -> bool:
        return self.config.conditional != "none"

    def prior(self) -> dist.TorchDistribution:
        c = self.config
        if c.prior == "gaussian":
            return dist.Normal(self.prior_loc, c.prior_scale * torch.ones_like(self.prior_loc)).to_event(1)
        if c.prior == "mixture":
            return CircleMixture(c.num_classes, loc=self.prior_loc)
        return SwissRoll(c.num_classes, loc=self.prior_loc)

    def likelihood(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        if self.config.conditional == "decoder":
            if y is None:
                raise ConfigError("this AAE's decoder takes the label: call model(x, y) with integer labels y")
            z = torch.cat([z, F.one_hot(y, self.config.num_classes).to(z.dtype).expand(*z.shape[:-1], -1)], -1)
        h = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            return BernoulliLogits(h, validate_args=False)
        loc, raw = h.chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        prior = self.prior()
        if self.config.conditional == "discriminator" and y is not None:
            prior = prior.given(y)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            return pyro.sample("x", self.likelihood(z, y), obs=x)

    @torch.no_grad()
    def sample_prior(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws of z from p(z) (or p(z | y) for the discriminator-conditioned AAE), shape (n, z_dim)."""
        prior = self.prior()
        if self.config.conditional == "discriminator" and y is not None:
            return prior.given(y).sample()
        return prior.sample((n,))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x | z[, y]), shape (..., x_dim)."""
        return self.likelihood(z, y).mean
