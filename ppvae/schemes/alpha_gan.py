"""The alpha-GAN scheme: an L1 autoencoder with a GAN on the data and a GAN on the codes, four networks
each with its own Adam, for any pair whose guide has one latent site.

With z_hat = E(x) the guide's code, x_rec = the mean of p(x | z_hat), z ~ p(z) a draw from the
**model's own prior** and x_gen = the mean of p(x | z), one minibatch runs, in the order of the
paper's Algorithm 1 (which updates the four networks separately)::

    repeat autoencoder_steps times (default 2, victor-shepardson's E/G twice per D/C step):
      encoder             (group "encoder": the guide)       lambda L1(x, x_rec) - log C(z_hat) + log(1 - C(z_hat))
      generator           (group "generator": the model)     lambda L1(x, x_rec) - log D(x_rec) - log D(x_gen)
    discriminator         (group "discriminator": D)         -log D(x) - log(1 - D(x_rec)) - log(1 - D(x_gen))
    code_discriminator    (group "code_discriminator": C)    -log C(z) - log(1 - C(z_hat))

with D = sigmoid(D's logit), C = sigmoid(C's logit) and L1(x, x_rec) the mean absolute error per
pixel (so lambda = 20 on MNIST, as yjchoe's reimplementation; victor-shepardson used 40 with z 128).

- **C's classes.** Prior draws are C's *real* class, the encoder's codes its *fake* class, so C
  tends to C*(z) = p(z) / (p(z) + q(z)) (Goodfellow et al. 2014, Prop. 1) and -logit C(z_hat)
  estimates log q(z_hat) / p(z_hat): the encoder's code term is a Monte Carlo estimate of the
  ELBO's KL(q(z) || p(z)) (Section 3 of the paper). The first arXiv version printed C's loss with
  the classes swapped, and one public MNIST reimplementation trains the encoder toward
  C(z_hat) = 1 while also training C toward 1 on z_hat, which makes the code term cooperative.
- **The encoder's code term** is the paper's density-ratio form -log C + log(1 - C), which equals
  -logit C(z_hat) exactly (``code_loss="ratio"``); ``"non-saturating"`` (-log C) and ``"minimax"``
  (log(1 - C)) are the alternatives. **The generator's data term** is the paper's non-saturating
  -log D(x_rec) - log D(x_gen) (``generator_loss``; also ``"ratio"``, ``"minimax"``). The
  generator sees both reconstructions and prior samples; D sees both as fakes.
- **Step ratio.** Each of the ``autoencoder_steps`` rounds steps the encoder, then the generator,
  and every phase recomputes what it needs from the networks as they are when it runs (a later
  phase sees the earlier phase's update, as the trainer's contract says): the generator phase
  re-encodes x with the encoder just stepped, and each generator phase draws its own z ~ p(z).
  Then D and C take one step each, on one fresh pass of the stepped encoder and generator
  (without gradients): z_hat, x_rec, and x_gen from a fresh z, which is also C's real class.
- **Reading the pair.** Codes come from a trace of the guide, prior draws from the model
  (``model.sample_prior`` when it has one, else a trace of the model run forward), and the mean of
  p(x | z) from a trace of the model conditioned on z, differentiably: so any pair that follows
  ppvae's convention trains this way (``ppvae.fit(model, guide, data, scheme="alpha-gan")``).

Options come from the scheme's arguments, else from the model's config (``AlphaGANConfig``, so that
``ppvae train --set reconstruction_weight=40`` reaches them and a checkpoint records them), else
from ``AlphaGANConfig``'s defaults: ``reconstruction_weight`` (lambda), ``autoencoder_steps``,
``generator_loss``, ``code_loss``, ``adam_betas`` (default (0.5, 0.9), victor-shepardson's and
yjchoe's; the run's ``TrainConfig.adam_betas`` are not used unless passed here), ``discriminator_lr``
(D and C; default the run's lr), ``noise_std`` (Gaussian noise on D's inputs), and the widths of D
and C, which are MLPs without batch norm built from x_dim and z_dim unless passed. The validation
metric is the L1 reconstruction error per datapoint (summed over pixels), minimized.

References:
  Rosca, Lakshminarayanan, Warde-Farley & Mohamed (2017), Variational Approaches for
  Auto-Encoding Generative Adversarial Networks, arXiv:1706.04987 (Algorithm 1).
  Goodfellow et al. (2014), Generative Adversarial Nets (the non-saturating loss, the optimal D).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Sequence

import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from ppvae.errors import ConfigError
from ppvae.models.alpha_gan import AlphaGANConfig, check_training_options
from ppvae.nn import mlp
from ppvae.schemes.adversarial import _NoModel, latent_sites
from ppvae.schemes.base import ParamGroup, Phase, Scheme, StepContext
from ppvae.schemes.bound import parameters_of

# Settings resolved as: the scheme's argument, else the model's config, else these (AlphaGANConfig's).
SETTINGS = ("reconstruction_weight", "autoencoder_steps", "generator_loss", "code_loss", "adam_betas",
            "discriminator_lr", "noise_std", "discriminator_hidden", "code_discriminator_hidden",
            "discriminator_activation")
DEFAULTS = {f.name: f.default for f in dataclasses.fields(AlphaGANConfig) if f.name in SETTINGS}


class AlphaGANScheme(Scheme):
    """Encoder, generator, discriminator and code-discriminator phases (see the module docstring).

    ``discriminator`` maps x (B, D) and ``code_discriminator`` maps z (B, d) to logits (B,) or
    (B, 1); ``site`` names the guide's latent site (default: its only one), ``observed`` the model's
    observed site. Every other option, when None, comes from the model's config or the defaults.
    """

    name = "alpha-gan"
    mode = "min"

    def __init__(self, discriminator: nn.Module | None = None, code_discriminator: nn.Module | None = None, *,
                 site: str | None = None, observed: str = "x", reconstruction_weight: float | None = None,
                 autoencoder_steps: int | None = None, generator_loss: str | None = None, code_loss: str | None = None,
                 adam_betas: tuple[float, float] | None = None, discriminator_lr: float | None = None,
                 noise_std: float | None = None, discriminator_hidden: Sequence[int] | None = None,
                 code_discriminator_hidden: Sequence[int] | None = None, discriminator_activation: str | None = None):
        super().__init__()
        check_training_options(reconstruction_weight, autoencoder_steps, generator_loss, code_loss, adam_betas,
                               discriminator_lr, noise_std)
        self.discriminator, self.code_discriminator = discriminator, code_discriminator
        self.site, self.observed = site, observed
        self.given = {k: v for k, v in dict(
            reconstruction_weight=reconstruction_weight, autoencoder_steps=autoencoder_steps,
            generator_loss=generator_loss, code_loss=code_loss, adam_betas=adam_betas,
            discriminator_lr=discriminator_lr, noise_std=noise_std, discriminator_hidden=discriminator_hidden,
            code_discriminator_hidden=code_discriminator_hidden, discriminator_activation=discriminator_activation,
        ).items() if v is not None}
        self.resolve(None)

    @property
    def monitor(self) -> str:
        return "valid_l1"

    def resolve(self, model: Callable | None) -> None:
        """Each setting from the scheme's arguments, else ``model.config``, else the defaults."""
        config = getattr(model, "config", None)
        settings = {k: self.given.get(k, getattr(config, k, DEFAULTS[k])) for k in SETTINGS}
        check_training_options(settings["reconstruction_weight"], settings["autoencoder_steps"],
                               settings["generator_loss"], settings["code_loss"], settings["adam_betas"],
                               settings["discriminator_lr"], settings["noise_std"])
        self.settings = settings
        self.lam, self.ae_steps = float(settings["reconstruction_weight"]), int(settings["autoencoder_steps"])
        self.noise_std = float(settings["noise_std"])

    # --- setup ------------------------------------------------------------------------------

    def setup(self, model, guide, x, config) -> None:
        self.resolve(model)
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
            latents = latent_sites(poutine.trace(guide).get_trace(x))
        if self.site is None:
            if len(latents) != 1:
                raise ConfigError(f"the guide has latent sites {sorted(latents)}: pass site= to say which one the "
                                  "code discriminator regularizes")
            self.site = next(iter(latents))
        if self.site not in latents:
            raise ConfigError(f"the guide has no latent site {self.site!r}; its latent sites: {sorted(latents)}")
        z_dim, act = latents[self.site].shape[-1], self.settings["discriminator_activation"]
        if self.discriminator is None:
            self.discriminator = mlp(x.shape[-1], self.settings["discriminator_hidden"], 1, act)
        if self.code_discriminator is None:  # no batch norm: it would mix the two classes' statistics
            self.code_discriminator = mlp(z_dim, self.settings["code_discriminator_hidden"], 1, act)

    def param_groups(self, model, guide, x, config) -> dict[str, ParamGroup]:
        betas = tuple(float(b) for b in self.settings["adam_betas"])
        d_lr = self.settings["discriminator_lr"]
        d_lr = {} if d_lr is None else {"lr": float(d_lr)}
        return {"encoder": ParamGroup.from_config(parameters_of(_NoModel(), guide, x), config, betas=betas),
                "generator": ParamGroup.from_config(parameters_of(model, _NoModel(), x), config, betas=betas),
                "discriminator": ParamGroup.from_config(self.discriminator.parameters(), config, betas=betas, **d_lr),
                "code_discriminator": ParamGroup.from_config(self.code_discriminator.parameters(), config, betas=betas,
                                                            **d_lr)}

    # --- one step ---------------------------------------------------------------------------

    def step(self, model, guide, x, y, ctx: StepContext) -> Iterator[Phase]:
        B, s = x.shape[0], self.settings
        for _ in range(self.ae_steps):
            z_hat = self.encode(guide, x)  # (B, d), differentiable in E
            l1 = reconstruction_l1(x, self.decode(model, x, z_hat))  # (B,): through G into E
            code = adversarial_loss(self.code_logits(z_hat), s["code_loss"])
            yield Phase("encoder_loss", "encoder", self.lam * l1.mean() / x.shape[-1] + code, weight=B,
                        metrics={"l1_reconstruction": l1.mean().detach(), "encoder_code_term": code.detach()})
            with torch.no_grad():
                z_hat = self.encode(guide, x)  # the encoder just stepped
            x_rec, x_gen = self.decode(model, x, z_hat), self.decode(model, x, self.prior_draws(model, x))
            l1 = reconstruction_l1(x, x_rec)
            gan = (adversarial_loss(self.data_logits(x_rec), s["generator_loss"])
                   + adversarial_loss(self.data_logits(x_gen), s["generator_loss"]))
            yield Phase("generator_loss", "generator", self.lam * l1.mean() / x.shape[-1] + gan, weight=B,
                        metrics={"generator_gan_term": gan.detach()})
        with torch.no_grad():
            z_hat, z = self.encode(guide, x), self.prior_draws(model, x)
            x_rec, x_gen = self.decode(model, x, z_hat), self.decode(model, x, z)
        real, rec, gen = self.data_logits(x), self.data_logits(x_rec), self.data_logits(x_gen)
        accuracy = ((real > 0).float().mean() + (rec < 0).float().mean() + (gen < 0).float().mean()) / 3
        yield Phase("discriminator_loss", "discriminator", discriminator_loss(real, rec, gen), weight=B,
                    metrics={"discriminator_accuracy": accuracy.detach()})
        prior, codes = self.code_logits(z), self.code_logits(z_hat)
        accuracy = ((prior > 0).float().mean() + (codes < 0).float().mean()) / 2
        yield Phase("code_discriminator_loss", "code_discriminator", code_discriminator_loss(prior, codes), weight=B,
                    metrics={"code_discriminator_accuracy": accuracy.detach()})

    def data_logits(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits for x (noised while training when noise_std > 0), shape (B,)."""
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return self.discriminator(x).reshape(x.shape[0])

    def code_logits(self, z: torch.Tensor) -> torch.Tensor:
        """C's logits for codes z, shape (B,): large where z looks like a prior draw."""
        return self.code_discriminator(z).reshape(z.shape[0])

    def encode(self, guide: Callable, x: torch.Tensor) -> torch.Tensor:
        """z_hat = E(x), the value of the guide's latent site, differentiable in the guide."""
        return poutine.trace(guide).get_trace(x).nodes[self.site]["value"]

    def decode(self, model: Callable, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z) (B, D), from a trace of the model conditioned on z: differentiable in
        the model's parameters and in z (pixel probabilities for ppvae's BernoulliLogits)."""
        trace = poutine.trace(poutine.condition(model, data={self.site: z})).get_trace(x)
        return trace.nodes[self.observed]["fn"].mean

    @torch.no_grad()
    def prior_draws(self, model: Callable, x: torch.Tensor) -> torch.Tensor:
        """z ~ p(z), one per row of x: the model's ``sample_prior`` if it has one (no decoder pass),
        else the latent site's value in a trace of the model run forward."""
        if hasattr(model, "sample_prior"):
            return model.sample_prior(x.shape[0])
        return poutine.trace(model).get_trace(x).nodes[self.site]["value"]

    @torch.no_grad()
    def validate(self, model, guide, x, ctx, batch_size: int = 500) -> dict[str, float]:
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            total += float(reconstruction_l1(xb, self.decode(model, xb, self.encode(guide, xb))).sum())
        return {self.monitor: total / x.shape[0]}

    def describe(self) -> dict:
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()}
        return {"name": self.name, "site": self.site, **settings}


def reconstruction_l1(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """||x - x_rec||_1 per datapoint, shape (B,). The loss uses its mean over the batch divided by
    the number of pixels (the per-pixel mean absolute error), times lambda."""
    return (x - x_rec).abs().sum(-1)


def adversarial_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """The term a network minimizes to have its fakes judged real, with P = sigmoid(logits):
    ``"non-saturating"`` -E[log P], ``"ratio"`` -E[log P - log(1 - P)] = -E[logits] (the paper's
    density-ratio form), ``"minimax"`` E[log(1 - P)]."""
    if kind == "non-saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "ratio":
        return -fake_logits.mean()
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    raise ConfigError(f"unknown adversarial loss {kind!r}")


def discriminator_loss(real_logits: torch.Tensor, *fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(real)] - sum_f E[log(1 - D(f))], D = sigmoid(logits): D's loss with the data as the
    real class and the reconstructions and the generator's samples as two fake batches."""
    return F.softplus(-real_logits).mean() + sum(F.softplus(f).mean() for f in fake_logits)


def code_discriminator_loss(prior_logits: torch.Tensor, code_logits: torch.Tensor) -> torch.Tensor:
    """-E[log C(z)] - E[log(1 - C(z_hat))], C = sigmoid(logits): prior draws z are C's **real**
    class (label 1), the encoder's codes z_hat its fake class (label 0), so C -> p / (p + q)."""
    return F.softplus(-prior_logits).mean() + F.softplus(code_logits).mean()
