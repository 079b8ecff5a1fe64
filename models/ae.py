"""The plain (deterministic) autoencoder, written as a model/guide pair the ``bound`` scheme trains."""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from ppvae.distributions import BernoulliLogits
from ppvae.errors import ConfigError
from ppvae.nn import mlp

LIKELIHOODS = ("bernoulli", "normal")


@dataclass
class AEConfig:
    z_dim: int = 20  # the code size
    hidden: tuple[int, ...] = (500,)  # encoder and decoder widths (the AEVB report: one tanh layer of 500)
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # "bernoulli": cross-entropy loss; "normal": squared error (fixed sigma)
    sigma: float = 1.0  # "normal": the fixed std; the loss is squared error / (2 sigma^2) + a constant
    code_momentum: float = 0.1  # EMA weight of each step's codes in their running mean/variance (BatchNorm's)

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be one of {LIKELIHOODS} (cross-entropy or squared error), got {self.likelihood!r}")
        self.z_dim, self.hidden = int(self.z_dim), tuple(int(h) for h in self.hidden)
        if self.z_dim < 1 or any(h < 1 for h in self.hidden):
            raise ConfigError(f"z_dim and hidden widths must be positive, got z_dim={self.z_dim}, hidden={self.hidden}")
        if not self.sigma > 0:
            raise ConfigError(f"sigma must be positive, got {self.sigma!r}")
        if not 0 < self.code_momentum <= 1:
            raise ConfigError(f"code_momentum must be in (0, 1], got {self.code_momentum!r}")


class Flat(TorchDistribution):
    """The improper flat "prior" of an autoencoder's code: log density 0 everywhere, so it adds
    nothing to any objective and the pair's ELBO is the reconstruction term alone.

    A flat density cannot be sampled. Code that runs the model without the guide (``ppvae.sample``,
    the parameter-collecting trace of the ``bound`` scheme) still needs a code, so ``sample`` draws
    from ``codes``, the Gaussian fitted to the training codes (:class:`AEModel`): a stand-in whose
    density is *not* what ``log_prob`` returns."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, codes: dist.Normal, batch_shape=torch.Size()):
        self.codes = codes  # Normal over (z_dim,), batch shape ()
        super().__init__(torch.Size(batch_shape), codes.loc.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return Flat(self.codes, torch.Size(batch_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return value.new_zeros(torch.broadcast_shapes(value.shape[:-1], self.batch_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.codes.sample(torch.Size(sample_shape) + self.batch_shape)


class AEModel(nn.Module):
    """The decoder of a plain autoencoder as a Pyro model::

        z   ~ flat (improper; log density 0)
        x   ~ Bernoulli(logits = g(z))        likelihood="bernoulli"
        x   ~ N(g(z), sigma^2 I), sigma fixed likelihood="normal"

    With the deterministic encoder of :class:`ppvae.guides.ae.AEEncoder`, z = f(x) (a Delta, log q
    = 0), the pair's ELBO is log p(x | z = f(x)) + log p(z) - log q(z | x) = log p(x | g(f(x))):

    - "bernoulli": minus the binary cross-entropy between x and g(f(x)) (summed over pixels);
    - "normal": -|x - g(f(x))|^2 / (2 sigma^2) - (D / 2) log(2 pi sigma^2), minus the squared error
      up to a scale and a constant (sigma changes nothing without weight decay: Adam is invariant to
      the loss's scale).

    So the single-phase ``bound`` scheme trains the autoencoder of the AEVB report's section 5 with
    any of ``elbo`` / ``elbo-analytic`` (identical here) or ``iwae`` (k identical particles: the
    same), and its "validation bound" is minus the reconstruction loss. It bounds nothing: a Delta
    has no density and the flat prior no normalizer, so ``ppvae.log_likelihood`` refuses the pair.
    Weight decay is the trainer's ``weight_decay`` (Adam's L2 term lambda * theta added to the
    gradient of the loss, which ppvae scales to the whole dataset: the same as adding
    (lambda / 2) |theta|^2 to the summed reconstruction loss, the report's eq. 15).

    An autoencoder defines no distribution over codes. For ``ppvae.sample`` the model keeps running
    moments of the training codes (updated in ``forward`` only while gradients are on and the module
    is in training mode, like BatchNorm's statistics, and checkpointed with it) and draws from that
    diagonal Gaussian (``sample_latents``).

    References:
      Kingma & Welling (2014), Auto-Encoding Variational Bayes.
      Hinton & Salakhutdinov (2006), Reducing the Dimensionality of Data with Neural Networks.
    """

    def __init__(self, x_dim: int, config: AEConfig | None = None):
        super().__init__()
        self.config = config = config or AEConfig()
        self.x_dim = int(x_dim)
        self.decoder = mlp(config.z_dim, config.hidden, self.x_dim, config.activation)
        self.register_buffer("code_mean", torch.zeros(config.z_dim))
        self.register_buffer("code_var", torch.ones(config.z_dim))
        self.register_buffer("code_steps", torch.zeros((), dtype=torch.long))

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        h = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            return BernoulliLogits(h, validate_args=False)
        return dist.Normal(h, self.config.sigma + torch.zeros_like(h)).to_event(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", Flat(self.code_distribution()))
            if self.training and torch.is_grad_enabled():
                self._track_codes(z)
            return pyro.sample("x", self.likelihood(z), obs=x)

    @torch.no_grad()
    def _track_codes(self, z: torch.Tensor) -> None:
        flat = z.detach().reshape(-1, z.shape[-1])
        # a plain average over the first steps (no bias towards the initial N(0, I)), then an EMA
        m = max(self.config.code_momentum, 1.0 / float(self.code_steps + 1))
        self.code_mean.lerp_(flat.mean(0), m)
        self.code_var.lerp_(flat.var(0, unbiased=False) if flat.shape[0] > 1 else self.code_var, m)
        self.code_steps += 1

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """g(z): pixel probabilities or Gaussian means, shape (..., x_dim)."""
        return self.likelihood(z).mean

    def code_distribution(self) -> dist.Normal:
        """The diagonal Gaussian fitted to the training codes (running moments)."""
        return dist.Normal(self.code_mean, self.code_var.clamp_min(1e-12).sqrt())

    @torch.no_grad()
    def sample_latents(self, n: int) -> dict[str, torch.Tensor]:
        """n codes from the diagonal Gaussian fitted to the training codes."""
        return {"z": self.code_distribution().sample((n,))}
