"""The variational autoencoder's generative model, with one or two stochastic layers."""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.direct import StoryModule
from ppvae.distributions import BernoulliLogits
from ppvae.errors import ConfigError
from ppvae.nn import GaussianNet, mlp

LIKELIHOODS = ("bernoulli", "normal")

# The IWAE paper's architectures (Burda et al. 2016, section 5): deterministic hidden widths of the
# networks between x and z1 and between z1 and z2, and the stochastic layer sizes.
PAPER_ARCHITECTURES = {
    1: dict(z_dims=(50,), hidden=((200, 200),)),
    2: dict(z_dims=(100, 50), hidden=((200, 200), (100, 100))),
}


@dataclass
class VAEConfig:
    stochastic_layers: int = 1  # 1 or 2; picks the IWAE paper's architecture unless z_dims/hidden are set
    z_dims: tuple[int, ...] | None = None  # sizes of z1 (bottom, next to x) ... zL (top)
    hidden: tuple[tuple[int, ...], ...] | None = None  # hidden widths between x-z1, z1-z2, ...
    activation: str = "tanh"  # the paper's; relu/elu/sigmoid/... for the activation study
    likelihood: str = "bernoulli"  # "bernoulli" for binary data, "normal" (learned variance) for continuous
    min_scale: float = 1e-3  # floor of the Gaussian decoder's standard deviation

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.z_dims is None or self.hidden is None:
            if self.stochastic_layers not in PAPER_ARCHITECTURES:
                raise ConfigError(
                    f"stochastic_layers must be 1 or 2 for the paper architectures, got {self.stochastic_layers!r}; "
                    "or give z_dims and hidden explicitly"
                )
            arch = PAPER_ARCHITECTURES[self.stochastic_layers]
            self.z_dims = tuple(self.z_dims or arch["z_dims"])
            self.hidden = tuple(tuple(h) for h in (self.hidden or arch["hidden"]))
        self.z_dims = tuple(int(z) for z in self.z_dims)
        self.hidden = tuple(tuple(int(w) for w in h) for h in self.hidden)
        if len(self.hidden) != len(self.z_dims):
            raise ConfigError(
                f"hidden needs one tuple of widths per stochastic layer: got {len(self.hidden)} for "
                f"z_dims={self.z_dims}"
            )
        self.stochastic_layers = len(self.z_dims)


def site_names(num_layers: int) -> list[str]:
    """Latent site names, bottom first: ["z"] for one layer, ["z1", "z2", ...] for more."""
    return ["z"] if num_layers == 1 else [f"z{i + 1}" for i in range(num_layers)]


class VAE(StoryModule):
    """Deep latent Gaussian model of Kingma & Welling (2014) and Burda et al. (2016)::

        z_L ~ N(0, I)
        z_l ~ N(mu_l(z_{l+1}), diag sigma_l(z_{l+1})^2)      l = L-1, ..., 1
        x   ~ Bernoulli(logits = f(z_1))                      binary data, or
        x   ~ N(mu(z_1), diag sigma(z_1)^2)                    continuous data (learned variance)

    ``story(x, sample)`` is the program; ``forward(x)`` runs it with ``pyro.sample`` inside
    ``pyro.plate("data", B)`` (:class:`ppvae.direct.StoryModule`). Its parameters are ordinary torch parameters
    (ppvae optimizes them with torch.optim), so two models never share a param-store entry.

    References:
      Kingma & Welling (2014), Auto-Encoding Variational Bayes.
      Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
    """

    def __init__(self, x_dim: int, config: VAEConfig | None = None):
        super().__init__()
        self.config = config = config or VAEConfig()
        self.x_dim = int(x_dim)
        self.names = site_names(len(config.z_dims))
        z1 = config.z_dims[0]
        out = self.x_dim if config.likelihood == "bernoulli" else 2 * self.x_dim
        self.decoder = mlp(z1, config.hidden[0], out, config.activation)
        # p(z_l | z_{l+1}) for the layers below the top, bottom first
        self.conditionals = nn.ModuleList(
            GaussianNet(config.z_dims[l + 1], config.hidden[l + 1], config.z_dims[l], config.activation)
            for l in range(len(config.z_dims) - 1)
        )
        # Buffers, not Python floats, so the prior follows .to(device) (DESIGN fact 9).
        self.register_buffer("prior_loc", torch.zeros(config.z_dims[-1]))
        self.register_buffer("prior_scale", torch.ones(config.z_dims[-1]))

    def likelihood(self, z1: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z1) as a distribution over the whole (flattened) image."""
        h = self.decoder(z1)
        if self.config.likelihood == "bernoulli":
            # validate_args off: ppvae checks the data's support once, up front, not every step.
            return BernoulliLogits(h, validate_args=False)
        loc, raw = h.chunk(2, dim=-1)
        return dist.Normal(loc, nn.functional.softplus(raw) + self.config.min_scale).to_event(1)

    def prior(self) -> dist.TorchDistribution:
        """p(z_L), the top layer's prior; the hook learned-prior families override."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def story(self, x: torch.Tensor, sample) -> torch.Tensor:
        z = sample(self.names[-1], self.prior())
        for name, conditional in zip(reversed(self.names[:-1]), reversed(self.conditionals)):
            z = sample(name, dist.Normal(*conditional(z)).to_event(1))
        return sample("x", self.likelihood(z), obs=x)

    @torch.no_grad()
    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z1): pixel probabilities or Gaussian means, shape (..., x_dim)."""
        return self.likelihood(z1).mean
