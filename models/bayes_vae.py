"""The VAE with full variational Bayes over its decoder's weights (Kingma & Welling 2014, appendix F)."""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae.bayes import BLUNDELL_MIXTURE, BayesianMLP, MeanFieldNormal, check_prior_options
from ppvae.distributions import BernoulliLogits
from ppvae.errors import ConfigError

LIKELIHOODS = ("bernoulli", "normal")


@dataclass
class BayesVAEConfig:
    z_dim: int = 50  # the IWAE paper's one-layer VAE: 784-200-200-50, mirrored
    hidden: tuple[int, ...] = (200, 200)  # widths of encoder (x -> z) and decoder (z -> x), as the vae family
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # "bernoulli" for binary data, "normal" (learned variance) for continuous
    prior: str = "normal"  # weight prior: "normal", N(0, prior_scale^2) (analytic KL), or "scale-mixture"
    prior_scale: float = 1.0  # s of the Normal weight prior (the AEVB paper and EVE use 1)
    mixture: tuple[float, float, float] = BLUNDELL_MIXTURE  # (pi, s1, s2) of the scale mixture (Blundell et al.)
    init_log_var: float = -10.0  # initial log sigma^2 of every weight's posterior (EVE's -10: sigma = 0.0067)
    local_reparameterization: bool = False  # sample pre-activations instead of weights (lower variance)
    min_scale: float = 1e-3  # floor of the Gaussian decoder's standard deviation

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        self.z_dim, self.hidden = int(self.z_dim), tuple(int(h) for h in self.hidden)
        if self.z_dim < 1 or not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"z_dim and every hidden width must be positive (and hidden non-empty), got "
                              f"z_dim={self.z_dim}, hidden={self.hidden}")
        self.mixture = tuple(float(m) for m in self.mixture)
        check_prior_options(self.prior, self.prior_scale, self.mixture)

    def decoder_sizes(self, x_dim: int) -> list[int]:
        out = x_dim if self.likelihood == "bernoulli" else 2 * x_dim
        return [self.z_dim, *self.hidden, out]  # the vae family's decoder: the same widths, same order


class BayesVAE(nn.Module):
    """A VAE whose decoder weights are latent variables with a prior, shared by all datapoints::

        w   ~ p(w) = prod_j N(w_j; 0, s^2)       or Blundell's scale mixture     (global: once per dataset)
        z_i ~ N(0, I)                                                             (local)
        x_i ~ Bernoulli(logits = f_w(z_i))   or  N(mu_w(z_i), sigma_w(z_i)^2)     (f_w: the MLP at weights w)

    Every weight and bias of the decoder is a sample site outside the data plate
    (``"decoder.<l>.weight"``, ``"decoder.<l>.bias"``); the guide
    (:class:`ppvae.guides.bayes_vae.BayesVAEGuide`) is the amortized encoder for z plus a
    mean-field Normal over them. The model has no trainable parameters: the network it uses is a
    draw from the weight posterior. z is sampled before the weights so that the analytic KL is
    valid for both (``elbo-analytic`` only uses it when every model latent before a site is
    sampled by the guide before it, and the guide samples z first).

    Training minimizes N / B * sum_b [-(log p(x_b | z_b, w) + beta (log p(z_b) - log q(z_b | x_b)))]
    + beta KL(q(w) || p(w)): the weight KL is counted once per minibatch (the ELBO of the whole
    dataset, ``ppvae.objectives``), and the trainer's KL warm-up weight beta (``kl_warmup_epochs``)
    multiplies it as it multiplies the KL of z. At the start the weight KL is large (~4.5 nats per
    weight at log-variance -10 under N(0, 1): ~19 nats per datapoint for 207k weights and N =
    50,000), which is what warm-up softens.

    The model reads the guide's q(w) (attached by the family's builder, not a submodule: its
    parameters stay the guide's) for what needs the posterior rather than a sampled w:
    ``decode(z)`` (the mean of p(x | z) at the posterior-mean weights: manifolds),
    ``sample_latents(n)`` (``ppvae.sample`` draws the weights from q, not from the prior: samples
    are posterior predictive), and, with ``local_reparameterization=True``, the likelihood itself,
    whose pre-activations are then drawn from their exact Gaussian under q(w) per datapoint (the
    weight sites are still sampled, for the KL, but the likelihood does not read them).

    References:
      Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix F.
      Blundell, Cornebise, Kavukcuoglu & Wierstra (2015), Weight Uncertainty in Neural Networks.
      Kingma, Salimans & Welling (2015), Variational Dropout and the Local Reparameterization Trick.
    """

    def __init__(self, x_dim: int, config: BayesVAEConfig | None = None):
        super().__init__()
        self.config = config = config or BayesVAEConfig()
        self.x_dim = int(x_dim)
        self.decoder = BayesianMLP("decoder", config.decoder_sizes(self.x_dim), config.activation,
                                   config.prior, config.prior_scale, config.mixture)
        self.register_buffer("prior_loc", torch.zeros(config.z_dim))
        self.register_buffer("prior_scale", torch.ones(config.z_dim))
        self._posterior: list[MeanFieldNormal] = []  # a list: not a submodule (the guide owns it)

    def attach_posterior(self, posterior: MeanFieldNormal) -> None:
        """Give the model the guide's q(w) (for ``decode``, ``sample_latents`` and the local
        reparameterization trick)."""
        missing = set(self.decoder.shapes) - set(posterior.sites)
        if missing:
            raise ConfigError(f"the posterior has no site(s) {sorted(missing)} of this decoder")
        self._posterior[:] = [posterior]

    @property
    def posterior(self) -> MeanFieldNormal:
        if not self._posterior:
            raise ConfigError("this BayesVAE has no weight posterior attached: build it with "
                              "ppvae.build('bayes-vae', ...) or call model.attach_posterior(guide.weights)")
        return self._posterior[0]

    def _output(self, h: torch.Tensor) -> dist.TorchDistribution:
        if self.config.likelihood == "bernoulli":
            return BernoulliLogits(h, validate_args=False)
        loc, raw = h.chunk(2, dim=-1)
        return dist.Normal(loc, nn.functional.softplus(raw) + self.config.min_scale).to_event(1)

    def likelihood(self, z: torch.Tensor, weights: dict[str, torch.Tensor]) -> dist.TorchDistribution:
        """p(x | z, w): at the sampled ``weights`` (one draw per particle), or, with the local
        reparameterization trick, with pre-activations drawn under q(w) for each datapoint."""
        if self.config.local_reparameterization:
            return self._output(self.decoder.forward_lrt(z, self.posterior))
        return self._output(self.decoder(z, weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = dist.Normal(self.prior_loc, self.prior_scale).to_event(1)
        data = pyro.plate("data", x.shape[0])  # one plate object, entered twice (a second would be a second site)
        with data:
            z = pyro.sample("z", prior)
        weights = self.decoder.sample_weights()  # global: outside the data plate, once per particle
        with data:
            return pyro.sample("x", self.likelihood(z, weights), obs=x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z) at the posterior-mean weights, shape (..., x_dim)."""
        return self._output(self.decoder.forward_mean(z, self.posterior)).mean

    @torch.no_grad()
    def sample_latents(self, n: int) -> dict[str, torch.Tensor]:
        """n prior draws of z and one draw of the weights from q(w): what ``ppvae.sample``
        conditions on, so that samples come from the posterior predictive."""
        z = dist.Normal(self.prior_loc, self.prior_scale).to_event(1).sample((n,))
        return {"z": z, **self.posterior.draw()}
