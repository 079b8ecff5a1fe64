"""The adversarial autoencoder paper's 2-D priors: a mixture of Gaussians on a circle and a swiss roll.

Both split into ``num_classes`` labelled regions, so a supervised AAE can draw z from its label's
region (``sample_given(y)``). Settings follow the most careful public reimplementation of
Makhzani et al. (musyoku/adversarial-autoencoder, see DESIGN.md): mixture components at radius
1.4, standard deviation 0.5 along the radius and 0.05 across it; swiss roll r = 3 sqrt(u),
angle 4 pi sqrt(u) with u ~ U(0, 1) (label k: u in [k/K, (k+1)/K)).

References:
  Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), Adversarial Autoencoders, Figure 4.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints


class CircleMixture(dist.TorchDistribution):
    """K elongated Gaussians evenly spaced on a circle in 2-D, equally weighted::

        k ~ Uniform{0..K-1},   z = R(2 pi k / K) (radius + radial_std e1, tangential_std e2),  e ~ N(0, I)

    where R(a) rotates by a. ``log_prob`` is the exact mixture density.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, num_components: int = 10, radius: float = 1.4, radial_std: float = 0.5,
                 tangential_std: float = 0.05, *, loc: torch.Tensor | None = None, validate_args=None):
        self.num_components, self.radius = int(num_components), float(radius)
        self.radial_std, self.tangential_std = float(radial_std), float(tangential_std)
        ref = loc if loc is not None else torch.zeros(())
        angles = 2 * math.pi * torch.arange(self.num_components, dtype=ref.dtype, device=ref.device) / self.num_components
        self._rotation = torch.stack([torch.stack([angles.cos(), -angles.sin()], -1),
                                      torch.stack([angles.sin(), angles.cos()], -1)], -2)  # (K, 2, 2)
        std = ref.new_tensor([self.radial_std, self.tangential_std])
        self._means = self._rotation[..., 0] * self.radius  # (K, 2): first column times the radius
        self._scale = self._rotation * std  # R diag(std): z = mean + R diag(std) eps
        self._covariance = self._scale @ self._scale.transpose(-1, -2)  # R diag(std^2) R^T
        super().__init__(torch.Size(), torch.Size([2]), validate_args=validate_args)

    def _components(self) -> dist.MultivariateNormal:
        return dist.MultivariateNormal(self._means, covariance_matrix=self._covariance)

    def expand(self, batch_shape, _instance=None):
        return dist.ExpandedDistribution(self, batch_shape)

    def sample_given(self, y: torch.Tensor) -> torch.Tensor:
        """One draw from component ``y`` per entry of the integer tensor ``y``: shape (*y.shape, 2)."""
        eps = torch.randn(*y.shape, 2, device=self._means.device, dtype=self._means.dtype)
        return self._means[y] + (self._scale[y] @ eps.unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        k = torch.randint(self.num_components, shape, device=self._means.device)
        return self.sample_given(k)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_component = self._components().log_prob(value.unsqueeze(-2))  # (..., K)
        return torch.logsumexp(log_component, -1) - math.log(self.num_components)

    def given(self, y: torch.Tensor) -> dist.MultivariateNormal:
        """p(z | y): component ``y``, a distribution with batch shape ``y.shape``."""
        return dist.MultivariateNormal(self._means[y], covariance_matrix=self._covariance[y])


class SwissRoll(dist.TorchDistribution):
    """The swiss-roll prior: a spiral curve in 2-D, ``z = 3 sqrt(u) (cos 4 pi sqrt(u), sin 4 pi sqrt(u))``
    with u ~ U(0, 1); label k covers u in [k / K, (k + 1) / K).

    It lies on a curve, so it has no density in 2-D: ``log_prob`` raises. Train with an adversarial
    scheme (which needs samples only) and evaluate with the Parzen window, not ``log_likelihood``.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, num_classes: int = 10, *, loc: torch.Tensor | None = None, validate_args=None):
        self.num_classes = int(num_classes)
        self._ref = loc if loc is not None else torch.zeros(())
        super().__init__(torch.Size(), torch.Size([2]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return dist.ExpandedDistribution(self, batch_shape)

    def _point(self, u: torch.Tensor) -> torch.Tensor:
        r = 3.0 * u.sqrt()
        angle = 4.0 * math.pi * u.sqrt()
        return torch.stack([r * angle.cos(), r * angle.sin()], -1)

    def sample_given(self, y: torch.Tensor) -> torch.Tensor:
        u = (torch.rand(y.shape, device=self._ref.device, dtype=self._ref.dtype) + y.to(self._ref.dtype)) / self.num_classes
        return self._point(u)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        return self._point(torch.rand(shape, device=self._ref.device, dtype=self._ref.dtype))

    def given(self, y: torch.Tensor) -> "SwissRollSegment":
        """p(z | y): the roll's segment ``y``, a distribution with batch shape ``y.shape``."""
        return SwissRollSegment(self, y)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "the swiss-roll prior lies on a curve and has no density in 2-D: train it with an adversarial "
            "scheme and evaluate it with the Parzen window (ppvae.parzen), not with log p(x)"
        )


class SwissRollSegment(dist.TorchDistribution):
    """Segment ``y`` of a :class:`SwissRoll` (one per entry of ``y``); no density, like the roll."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, roll: SwissRoll, y: torch.Tensor, validate_args=None):
        self.roll, self.y = roll, y
        super().__init__(y.shape, torch.Size([2]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return SwissRollSegment(self.roll, self.y.expand(batch_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.roll.sample_given(self.y.expand(torch.Size(sample_shape) + self.y.shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.roll.log_prob(value)
