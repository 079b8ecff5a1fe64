"""alpha-GAN's generative model: z ~ N(0, I) and a generator G(z), trained with an L1 reconstruction
term and two discriminators (one over x, one over z) by the ``alpha-gan`` scheme."""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae.distributions import BernoulliLogits
from ppvae.errors import ConfigError
from ppvae.nn import ACTIVATIONS, mlp

ADVERSARIAL_LOSSES = ("non-saturating", "ratio", "minimax")  # see ppvae.schemes.alpha_gan.adversarial_loss


@dataclass
class AlphaGANConfig:
    z_dim: int = 50  # yjchoe's MNIST reimplementation (victor-shepardson: 128)
    hidden: tuple[int, ...] = (200, 200)  # encoder and generator widths: ppvae's default VAE's (the IWAE
    #                                       paper's 1-layer net, z 50), so the two compare with the same networks
    activation: str = "tanh"  # encoder and generator (ppvae's VAE's); "relu", "leaky_relu", ...
    likelihood: str = "bernoulli"  # p(x | z): "bernoulli" (logits G(z)) or "normal" (mean G(z), fixed scale)
    normal_scale: float = 0.1  # the fixed standard deviation of the "normal" p(x | z): the L1 term trains
    #                            the mean only, so the scale enters only the model's nominal density
    discriminator_hidden: tuple[int, ...] = (500, 500)  # D over x
    code_discriminator_hidden: tuple[int, ...] = (750, 750)  # C over z: yjchoe's 750 units; no batch norm
    discriminator_activation: str = "leaky_relu"  # D and C
    # Training settings the alpha-gan scheme reads (a scheme option of the same name overrides them):
    # they live here so that `ppvae train --set` reaches them and a run's checkpoint records them.
    reconstruction_weight: float = 20.0  # lambda, times the per-pixel mean |x - x_rec| (as both public
    #                                      reimplementations: yjchoe 20 on MNIST, victor-shepardson 40)
    autoencoder_steps: int = 2  # encoder + generator rounds per D/C step (victor-shepardson's 2)
    generator_loss: str = "non-saturating"  # G's data-GAN term: -log D (the paper's Algorithm 1)
    code_loss: str = "ratio"  # E's code-GAN term: -log C + log(1 - C) = -logit C (the paper's Algorithm 1)
    adam_betas: tuple[float, float] = (0.5, 0.9)  # all four Adams (victor-shepardson, yjchoe)
    discriminator_lr: float | None = None  # D and C (None: the run's lr; yjchoe: 2e-4 vs 1e-3 for E and G)
    noise_std: float = 0.0  # Gaussian noise on D's inputs, real and fake alike (0: none)

    def __post_init__(self):
        if self.likelihood not in ("bernoulli", "normal"):
            raise ConfigError(f"alpha-gan option likelihood must be 'bernoulli' or 'normal', got {self.likelihood!r}")
        for name in ("activation", "discriminator_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ConfigError(f"alpha-gan option {name} must be one of {', '.join(ACTIVATIONS)}, got {getattr(self, name)!r}")
        self.z_dim = int(self.z_dim)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.discriminator_hidden = tuple(int(h) for h in self.discriminator_hidden)
        self.code_discriminator_hidden = tuple(int(h) for h in self.code_discriminator_hidden)
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        if self.z_dim < 1:
            raise ConfigError(f"z_dim must be a positive integer, got {self.z_dim}")
        if not self.normal_scale > 0:
            raise ConfigError(f"normal_scale must be positive, got {self.normal_scale}")
        check_training_options(self.reconstruction_weight, self.autoencoder_steps, self.generator_loss,
                               self.code_loss, self.adam_betas, self.discriminator_lr, self.noise_std)


def check_training_options(reconstruction_weight=None, autoencoder_steps=None, generator_loss=None, code_loss=None,
                           adam_betas=None, discriminator_lr=None, noise_std=None) -> None:
    """ConfigError for a bad alpha-GAN training setting (None: not given); shared with the scheme."""
    if reconstruction_weight is not None and not (isinstance(reconstruction_weight, (int, float))
                                                  and 0 <= reconstruction_weight < float("inf")):
        raise ConfigError(f"reconstruction_weight (lambda) must be zero or positive, got {reconstruction_weight!r}")
    if autoencoder_steps is not None and (isinstance(autoencoder_steps, bool) or int(autoencoder_steps) != autoencoder_steps
                                          or autoencoder_steps < 1):
        raise ConfigError(f"autoencoder_steps must be a positive integer, got {autoencoder_steps!r}")
    for name, value in (("generator_loss", generator_loss), ("code_loss", code_loss)):
        if value is not None and value not in ADVERSARIAL_LOSSES:
            raise ConfigError(f"{name} must be one of {', '.join(ADVERSARIAL_LOSSES)}, got {value!r}")
    if adam_betas is not None and (len(tuple(adam_betas)) != 2 or not all(0 <= float(b) < 1 for b in adam_betas)):
        raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {adam_betas!r}")
    if discriminator_lr is not None and not discriminator_lr > 0:
        raise ConfigError(f"discriminator_lr must be positive (or None: the run's lr), got {discriminator_lr!r}")
    if noise_std is not None and not noise_std >= 0:
        raise ConfigError(f"noise_std must be zero or positive, got {noise_std!r}")


class AlphaGANModel(nn.Module):
    """alpha-GAN's generative story (Rosca et al. 2017)::

        z ~ N(0, I)
        x ~ p(x | z)     Bernoulli(logits = G(z))  or  N(G(z), s^2 I)      (s fixed: normal_scale)

    A prescribed-prior latent-variable model whose likelihood is *hybrid*: the ``alpha-gan`` scheme
    (:class:`ppvae.schemes.AlphaGANScheme`) trains G with an L1 reconstruction term (the log of a
    Laplace likelihood around the mean of p(x | z)) and a discriminator D over x in place of the
    ELBO's log p(x | z), and replaces the KL term by a code discriminator C over z. The encoder
    (:class:`ppvae.guides.alpha_gan.AlphaGANEncoder`) is an implicit posterior, z = E(x), so the
    pair has no likelihood to estimate: ``ppvae.log_likelihood`` refuses it (its Delta guide);
    judge it by its samples (Parzen window, classifier-based scores) and reconstructions.

    References:
      Rosca, Lakshminarayanan, Warde-Farley & Mohamed (2017), Variational Approaches for
      Auto-Encoding Generative Adversarial Networks, arXiv:1706.04987.
    """

    default_scheme = "alpha-gan"  # ppvae.fit trains it with its four-phase scheme unless told otherwise

    def __init__(self, x_dim: int, config: AlphaGANConfig | None = None):
        super().__init__()
        self.config = config = config or AlphaGANConfig()
        self.x_dim = int(x_dim)
        self.generator = mlp(config.z_dim, config.hidden, self.x_dim, config.activation)
        # distribution parameters as buffers, so that they follow .to(device)
        self.register_buffer("prior_loc", torch.zeros(config.z_dim))
        self.register_buffer("prior_scale", torch.ones(config.z_dim))
        self.register_buffer("x_scale", torch.full((self.x_dim,), float(config.normal_scale)))

    def prior(self) -> dist.TorchDistribution:
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        h = self.generator(z)  # (..., B, x_dim)
        if self.config.likelihood == "bernoulli":
            return BernoulliLogits(h, validate_args=False)
        return dist.Normal(h, self.x_scale.expand(h.shape)).to_event(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(z), obs=x)

    @torch.no_grad()
    def sample_prior(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws of z ~ N(0, I), shape (n, z_dim) (``y`` is ignored: the prior is unconditional)."""
        return self.prior().sample((n,))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z), shape (..., x_dim): pixel probabilities, or G(z) itself."""
        return self.likelihood(z).mean
