"""The adversarial autoencoder with a categorical latent: semi-supervised classification,
unsupervised clustering and dimensionality reduction with cluster heads (Makhzani et al. 2016,
Sections 5-7)."""

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


@dataclass
class CategoricalAAEConfig:
    num_classes: int = 10  # K, the size of y: the classes (semi-supervised) or the clusters (16, 30)
    z_dim: int = 10  # the style z; 2 with cluster heads for a 2-D embedding
    hidden: tuple[int, ...] = (1000, 1000)  # encoder, decoder and both discriminators (the paper's 2x1000 ReLU)
    activation: str = "relu"
    likelihood: str = "bernoulli"  # "bernoulli" for binary data, "normal" (learned variance) for continuous
    prior_scale: float = 1.0  # standard deviation of the Gaussian prior on the style z
    labels: int | str = 100  # labelled training examples for the supervised phase, balanced over the
    #                          classes: 100, 1000, ... or "all"; 0: none (unsupervised clustering)
    label_seed: int = 0  # which labelled examples: the subset is a function of the training labels and this seed
    cluster_heads: bool = False  # dimensionality reduction: the decoder sees W_C^T y + z, K learned
    #                              cluster heads (rows of W_C) in the style space, instead of (y, z)
    head_distance: float = 6.0  # eta: pairs of cluster heads closer than this are penalized (3 prior std each side)
    min_scale: float = 1e-3  # floor of the Gaussian decoder's standard deviation
    dropout: float = 0.0  # dropout after each hidden layer of encoder and decoder, in training only: it
    #                       regularizes q(y | x), which otherwise memorizes a small labelled subset
    input_noise: float = 0.0  # std of Gaussian noise added to the encoder's input, in training only
    #                           (ppvae.nn.GaussianNoise; the ladder networks' 0.3), meant to regularize q(y | x);
    #                           on MNIST 0.3 gained nothing measurable (docs/aae_categorical.md)
    labelled_reconstruction: bool = False  # also reconstruct the labelled minibatch with its true label as y
    #                                        (not in the paper; ppvae.schemes.categorical's docstring)

    def __post_init__(self):
        if self.likelihood not in ("bernoulli", "normal"):
            raise ConfigError(f"aae-categorical option likelihood must be bernoulli or normal, got {self.likelihood!r}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if int(self.num_classes) != self.num_classes or self.num_classes < 2:
            raise ConfigError(f"num_classes must be an integer of at least 2, got {self.num_classes!r}")
        if int(self.z_dim) != self.z_dim or self.z_dim < 1:
            raise ConfigError(f"z_dim must be a positive integer, got {self.z_dim!r}")
        self.num_classes, self.z_dim = int(self.num_classes), int(self.z_dim)
        if isinstance(self.labels, str):
            if self.labels != "all":
                raise ConfigError(f"labels must be a number of labelled examples or 'all', got {self.labels!r}")
        elif isinstance(self.labels, bool) or self.labels < 0:
            raise ConfigError(f"labels must be 0 (unsupervised), a positive number of labelled examples or 'all', got {self.labels!r}")
        elif self.labels % self.num_classes:
            raise ConfigError(f"labels={self.labels} cannot be balanced over num_classes={self.num_classes}: "
                              f"use a multiple of {self.num_classes} (100 labels = 10 per class)")
        if not isinstance(self.labelled_reconstruction, bool):
            raise ConfigError(f"labelled_reconstruction must be true or false, got {self.labelled_reconstruction!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout is a probability in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.input_noise < float("inf"):
            raise ConfigError(f"input_noise is a standard deviation, zero or positive, got {self.input_noise!r}")
        if not self.prior_scale > 0 or not self.head_distance > 0:
            raise ConfigError("prior_scale and head_distance must be positive")

    @property
    def supervised(self) -> bool:
        return self.labels != 0


class CategoricalAAEModel(nn.Module):
    """The generative story of the semi-supervised / clustering adversarial autoencoder::

        y ~ OneHotCategorical(1/K, ..., 1/K)     the class, or the cluster, as a one-hot vector
        z ~ N(0, s^2 I)                           the style
        x ~ p(x | y, z)                           Bernoulli(logits = f([y, z])) or N(mu, sigma^2)

    and with cluster heads (dimensionality reduction, Section 7), the decoder reads the
    representation ``W_C^T y + z``: y picks one of K learned cluster heads (the rows of W_C, in the
    style space) and the style moves around it. :meth:`penalty` is the paper's cost on heads closer
    than ``head_distance`` (eta).

    The priors are fixed; the ``aae-categorical`` scheme (:class:`ppvae.schemes.categorical.
    CategoricalAdversarialScheme`) matches q(y) and q(z) to them with two discriminators.

    References:
      Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), Adversarial Autoencoders, Sections 5-7.
    """

    default_scheme = "aae-categorical"

    def __init__(self, x_dim: int, config: CategoricalAAEConfig | None = None):
        super().__init__()
        self.config = config = config or CategoricalAAEConfig()
        self.x_dim = int(x_dim)
        K, d = config.num_classes, config.z_dim
        out = self.x_dim if config.likelihood == "bernoulli" else 2 * self.x_dim
        self.decoder = mlp(d if config.cluster_heads else K + d, config.hidden, out, config.activation, config.dropout)
        self.register_buffer("class_probs", torch.full((K,), 1.0 / K))
        self.register_buffer("prior_loc", torch.zeros(d))
        if config.cluster_heads:
            # W_C, (K, d): row k is cluster k's head, learned. Spread about eta from the start, so
            # the penalty has little to push (Adam moves a head about lr per step). Heads placed at
            # least eta apart from the start (a 2-D spiral) were tried on MNIST and did worse: far
            # apart, half of the 20 were unused after 20 epochs (docs/aae_categorical.md)
            self.cluster_heads = nn.Parameter(0.5 * config.head_distance * torch.randn(K, d))

    def embed(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """What the decoder reads: ``W_C^T y + z`` with cluster heads (the embedding plotted in 2-D),
        else the concatenation ``[y, z]``. ``y`` is a one-hot or probability vector (..., K)."""
        if self.config.cluster_heads:
            return y @ self.cluster_heads + z
        return torch.cat([y, z.expand(*y.shape[:-1], -1)], -1)

    def likelihood(self, y: torch.Tensor, z: torch.Tensor) -> dist.TorchDistribution:
        h = self.decoder(self.embed(y, z))
        if self.config.likelihood == "bernoulli":
            return BernoulliLogits(h, validate_args=False)
        loc, raw = h.chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.config.prior_scale * torch.ones_like(self.prior_loc)
        with pyro.plate("data", x.shape[0]):
            # validate_args=False: replayed against the guide, y is a softmax vector, not one-hot;
            # only log p(x | y, z) is read there, and ppvae.log_likelihood refuses the Delta guide
            # with a clear message instead of a support error from here
            y = pyro.sample("y", dist.OneHotCategorical(probs=self.class_probs, validate_args=False))
            z = pyro.sample("z", dist.Normal(self.prior_loc, scale).to_event(1))
            return pyro.sample("x", self.likelihood(y, z), obs=x)

    def penalty(self) -> torch.Tensor:
        """sum over pairs i < j of max(0, eta - ||W_i - W_j||): pushes the cluster heads at least eta
        apart (0 without cluster heads). The adversarial scheme adds it to the reconstruction phase."""
        if not self.config.cluster_heads:
            return self.prior_loc.new_zeros(())
        i, j = torch.triu_indices(self.config.num_classes, self.config.num_classes, 1, device=self.prior_loc.device)
        # the floor keeps the gradient of the norm finite should two heads ever coincide
        distance = (self.cluster_heads[i] - self.cluster_heads[j]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
        return F.relu(self.config.head_distance - distance).sum()

    @torch.no_grad()
    def sample_prior(self, n: int, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """n draws of each latent, ``{"y": (n, K) one-hot, "z": (n, z_dim)}``; with integer labels
        ``y`` (n,), those classes instead of categorical draws."""
        K = self.config.num_classes
        onehot = (F.one_hot(y, K).to(self.prior_loc.dtype) if y is not None
                  else dist.OneHotCategorical(probs=self.class_probs).sample((n,)))
        z = self.prior_loc + self.config.prior_scale * torch.randn(n, self.config.z_dim, device=self.prior_loc.device)
        return {"y": onehot, "z": z}

    @torch.no_grad()
    def decode(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | y, z), shape (B, x_dim); ``y`` integer labels (B,) or one-hot/probabilities (B, K)."""
        if y.dtype in (torch.int32, torch.int64):
            y = F.one_hot(y, self.config.num_classes).to(z.dtype)
        return self.likelihood(y, z).mean
