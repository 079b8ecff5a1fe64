"""The adversarial autoencoder scheme: a reconstruction phase and a GAN on the codes, for any pair.

Per minibatch, in the order of Makhzani et al. (2016, Section 2)::

    reconstruction  (group "autoencoder": model + guide)   min  -log p(x | z),  z ~ q(z | x)
    discriminator   (group "discriminator": D)             min  -log D(z_p) - log(1 - D(z_q))
    generator       (group "generator": the guide)         min  -log D(z_q)   (non-saturating; or
                                                                 log(1 - D(z_q)), the minimax loss)

where z_p ~ p(z) are draws from the **model's own prior** (the discriminator's *real* class) and
z_q ~ q(z | x) the **guide's codes** for the minibatch (its *fake* class). Both come from the pair
through Pyro traces, as the ELBO reads them: the guide is traced, the model replayed against it,
and the reconstruction term is the model's own log p(x | z) at its observed sites. So any pair
that follows ppvae's convention trains adversarially: ``ppvae.fit(model, guide, data,
scheme="aae")``. A discriminator (2x1000 ReLU, no batch norm) is built from the latent size unless
one is passed. With ``condition_on_labels`` the one-hot label is appended to the discriminator's
input on both sides (prior draws then come from p(z | y): the model must take ``y``), so each class
fills its own region of the prior.

With several latent sites (``site=("y", "z")``) each site gets its own discriminator and its own
regularization phase, in the order given: the discriminator of site s, then the generator of site s
(groups ``discriminator_<s>`` and ``generator_<s>``), so the aggregated posterior of each site is
matched to its own prior marginal, as the semi-supervised AAE matches q(y) to a categorical and
q(z) to a Gaussian (:mod:`ppvae.schemes.categorical`). One site keeps the plain names above.

The discriminator's optimum is D*(z) = p(z) / (p(z) + q(z)) (Goodfellow et al. 2014, Prop. 1),
which ``tests/test_adversarial.py`` checks on two known 1-D Gaussians.

References:
  Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), Adversarial Autoencoders.
  Goodfellow et al. (2014), Generative Adversarial Nets (the non-saturating generator loss).
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterator, Mapping, Sequence

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.nn import functional as F

from ppvae.errors import ConfigError
from ppvae.nn import mlp
from ppvae.schemes.base import ParamGroup, Phase, Scheme, StepContext
from ppvae.schemes.bound import parameters_of

GENERATOR_LOSSES = ("non-saturating", "minimax")


class AdversarialScheme(Scheme):
    """Reconstruction, discriminator and generator phases (see the module docstring).

    Options: ``discriminator`` (a module mapping codes (B, d [+ classes]) to logits (B,) or (B, 1);
    default an MLP of ``hidden`` ReLU layers; with several sites a dict ``{site: module}``, missing
    sites get the default), ``site`` (the latent site to regularize, or a sequence of sites, each
    with its own discriminator; default the guide's only latent), ``generator_loss``
    ("non-saturating" or "minimax"), ``noise_std`` (Gaussian noise on the discriminator's inputs,
    both classes; musyoku's reimplementation used 0.3),
    ``discriminator_steps`` / ``generator_steps`` per minibatch, ``reconstruction_weight`` /
    ``adversarial_weight``, ``discriminator_lr`` / ``generator_lr`` (default: the run's lr), and
    ``condition_on_labels`` (None: when the model declares ``config.conditional == "discriminator"``).
    The validation metric is the reconstruction error -log p(x | z) per datapoint (minimized).
    """

    name = "aae"
    mode = "min"

    def __init__(self, discriminator: nn.Module | Mapping[str, nn.Module] | None = None, *,
                 site: str | Sequence[str] | None = None,
                 hidden: Sequence[int] = (1000, 1000), generator_loss: str = "non-saturating",
                 noise_std: float = 0.3, discriminator_steps: int = 1, generator_steps: int = 1,
                 reconstruction_weight: float = 1.0, adversarial_weight: float = 1.0,
                 discriminator_lr: float | None = None, generator_lr: float | None = None,
                 condition_on_labels: bool | None = None):
        super().__init__()
        if generator_loss not in GENERATOR_LOSSES:
            raise ConfigError(f"generator_loss must be one of {', '.join(GENERATOR_LOSSES)}, got {generator_loss!r}")
        for name, value in (("discriminator_steps", discriminator_steps), ("generator_steps", generator_steps)):
            if int(value) != value or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not noise_std >= 0 or not reconstruction_weight >= 0 or not adversarial_weight >= 0:
            raise ConfigError("noise_std and the loss weights must be zero or positive")
        if site is not None and not isinstance(site, str):
            site = tuple(site)
            if not site or not all(isinstance(s, str) for s in site) or len(set(site)) != len(site):
                raise ConfigError(f"site must be a latent site name or a sequence of distinct names, got {site!r}")
        self.discriminator = discriminator
        self.site, self.hidden, self.generator_loss = site, tuple(hidden), generator_loss
        self.noise_std, self.d_steps, self.g_steps = float(noise_std), int(discriminator_steps), int(generator_steps)
        self.w_rec, self.w_adv = float(reconstruction_weight), float(adversarial_weight)
        self.d_lr, self.g_lr = discriminator_lr, generator_lr
        self.condition_on_labels = condition_on_labels

    @property
    def monitor(self) -> str:
        return "valid_reconstruction"

    # --- setup ------------------------------------------------------------------------------

    def setup(self, model, guide, x, config) -> None:
        self.pass_labels = takes_labels(model) and takes_labels(guide)
        if self.condition_on_labels is None:
            self.condition_on_labels = getattr(getattr(model, "config", None), "conditional", None) == "discriminator"
        self.num_classes = int(getattr(getattr(model, "config", None), "num_classes", 10))
        if self.condition_on_labels and not self.pass_labels:
            raise ConfigError("condition_on_labels needs a model and guide that take the labels y: model(x, y)")
        kwargs = self._labels(torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
            latents = latent_sites(poutine.trace(guide).get_trace(x, **kwargs))
        if self.site is None:
            if len(latents) != 1:
                raise ConfigError(f"the guide has latent sites {sorted(latents)}: pass site= to say which one the "
                                  "discriminator regularizes")
            self.site = next(iter(latents))
        for site in self.sites:
            if site not in latents:
                raise ConfigError(f"the guide has no latent site {site!r}; its latent sites: {sorted(latents)}")
        extra = self.num_classes if self.condition_on_labels else 0
        if not self.several:
            if isinstance(self.discriminator, Mapping):
                self.discriminator = self.discriminator.get(self.site)
            if self.discriminator is None:
                self.discriminator = mlp(latents[self.site].shape[-1] + extra, self.hidden, 1, "relu")
            return
        given = self.discriminator if self.discriminator is not None else {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"with several sites {list(self.sites)} pass one discriminator per site as a dict "
                              "{site: module} (or none: each site gets the default)")
        unknown = set(given) - set(self.sites)
        if unknown:
            raise ConfigError(f"discriminators given for {sorted(unknown)}, which are not among the sites {list(self.sites)}")
        bad = [s for s in self.sites if "." in s or not s]
        if bad:
            raise ConfigError(f"site names {bad} cannot name a discriminator (no dots): rename the sites")
        # one network per site, in an nn.ModuleDict so each is checkpointed under its site's name
        self.discriminator = nn.ModuleDict({s: given.get(s) if given.get(s) is not None else
                                            mlp(latents[s].shape[-1] + extra, self.hidden, 1, "relu") for s in self.sites})

    @property
    def sites(self) -> tuple[str, ...]:
        """The regularized latent sites, in the order their regularization phases run."""
        return (self.site,) if isinstance(self.site, str) else tuple(self.site or ())

    @property
    def several(self) -> bool:
        return len(self.sites) > 1

    def _tag(self, site: str) -> str:
        """Suffix of a site's group and metric names: none with one site (the plain names)."""
        return f"_{site}" if self.several else ""

    def param_groups(self, model, guide, x, config) -> dict[str, ParamGroup]:
        kwargs = self._labels(torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        pair = parameters_of(model, guide, x, **kwargs)
        encoder = parameters_of(_NoModel(), guide, x, **kwargs)
        groups = {"autoencoder": ParamGroup.from_config(pair, config)}
        for site in self.sites:
            tag = self._tag(site)
            groups["discriminator" + tag] = ParamGroup.from_config(self._critic_net(site).parameters(), config)
            # the whole guide: a site's generator loss leaves the other sites' heads without a
            # gradient (None), and Adam skips those
            groups["generator" + tag] = ParamGroup.from_config(encoder, config)
            if self.d_lr is not None:
                groups["discriminator" + tag].lr = float(self.d_lr)
            if self.g_lr is not None:
                groups["generator" + tag].lr = float(self.g_lr)
        return groups

    # --- one step ---------------------------------------------------------------------------

    def step(self, model, guide, x, y, ctx: StepContext) -> Iterator[Phase]:
        kwargs = self._labels(y)
        yield self.reconstruction_phase(model, guide, x, kwargs, ctx)
        for site in self.sites:
            yield from self.regularization_phases(model, guide, x, y, kwargs, site)

    def reconstruction_phase(self, model, guide, x, kwargs, ctx: StepContext) -> Phase:
        """-log p(x | z), z ~ q(z | x), over model + guide (a subclass may add terms)."""
        log_lik, _ = reconstruction(model, guide, x, self.sites[0], kwargs)
        loss = -log_lik.mean()
        return Phase("reconstruction_loss", "autoencoder", self.w_rec * loss, value=loss.detach(), weight=x.shape[0])

    def regularization_phases(self, model, guide, x, y, kwargs, site: str) -> Iterator[Phase]:
        """The GAN on one latent site: discriminator step(s), then generator step(s)."""
        B, tag = x.shape[0], self._tag(site)
        onehot = F.one_hot(y, self.num_classes).to(x.dtype) if self.condition_on_labels else None
        for _ in range(self.d_steps):
            z_q = self.codes(guide, x, kwargs, site).detach()
            z_p = self.prior_draws(model, x, y, kwargs, site)
            real, fake = self.critic(z_p, onehot, site), self.critic(z_q, onehot, site)
            accuracy = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean())
            yield Phase(f"discriminator{tag}_loss", "discriminator" + tag, discriminator_loss(real, fake), weight=B,
                        metrics={f"discriminator{tag}_accuracy": accuracy.detach()})
        for _ in range(self.g_steps):
            fake = self.critic(self.codes(guide, x, kwargs, site), onehot, site)
            g = generator_loss(fake, self.generator_loss)
            yield Phase(f"generator{tag}_loss", "generator" + tag, self.w_adv * g, value=g.detach(), weight=B)

    def _critic_net(self, site: str | None) -> nn.Module:
        return self.discriminator[site or self.sites[0]] if self.several else self.discriminator

    def critic(self, z: torch.Tensor, onehot: torch.Tensor | None, site: str | None = None) -> torch.Tensor:
        """Discriminator logits for codes ``z`` of ``site`` (noised while training), shape (B,)."""
        if self.noise_std > 0:
            z = z + self.noise_std * torch.randn_like(z)
        if onehot is not None:
            z = torch.cat([z, onehot], -1)
        return self._critic_net(site)(z).reshape(z.shape[0])

    def codes(self, guide, x, kwargs, site: str | None = None) -> torch.Tensor:
        """z ~ q(z | x) from the guide's trace, differentiable in the guide's parameters."""
        return poutine.trace(guide).get_trace(x, **kwargs).nodes[site or self.sites[0]]["value"]

    @torch.no_grad()
    def prior_draws(self, model, x, y, kwargs, site: str | None = None) -> torch.Tensor:
        """z ~ p(z) (or p(z | y)) from the model: its ``sample_prior`` if it has one (no decoder
        pass; with several sites it returns ``{site: draws}``), else the value of the latent site
        in a trace of the model run forward."""
        site = site or self.sites[0]
        if hasattr(model, "sample_prior"):
            draws = model.sample_prior(x.shape[0], y if self.condition_on_labels else None)
            return draws[site] if isinstance(draws, Mapping) else draws
        return poutine.trace(model).get_trace(x, **kwargs).nodes[site]["value"]

    @torch.no_grad()
    def validate(self, model, guide, x, ctx, batch_size: int = 500) -> dict[str, float]:
        y = ctx.data.labels("valid")
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            yb = y[i : i + batch_size].to(x.device) if y is not None else None
            log_lik, _ = reconstruction(model, guide, x[i : i + batch_size], self.sites[0], self._labels(yb))
            total -= float(log_lik.sum())
        return {self.monitor: total / x.shape[0]}

    def _labels(self, y: torch.Tensor | None) -> dict:
        if not self.pass_labels:
            return {}
        if y is None:
            raise ConfigError("this pair takes labels y, but the dataset has none: use a labelled dataset")
        return {"y": y}

    def describe(self) -> dict:
        return {"name": self.name, "generator_loss": self.generator_loss,
                "site": self.site if isinstance(self.site, str) or self.site is None else list(self.site),
                "condition_on_labels": bool(self.condition_on_labels)}


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(real)] - E[log(1 - D(fake))], D = sigmoid(logits): prior draws are the real class."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """-E[log D(fake)] (non-saturating) or E[log(1 - D(fake))] (minimax), D = sigmoid(logits)."""
    if kind == "non-saturating":
        return F.softplus(-fake_logits).mean()
    return -F.softplus(fake_logits).mean()


def reconstruction(model: Callable, guide: Callable, x: torch.Tensor, site: str, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x | z) per datapoint (B,), with z ~ q(z | x), read from the model's observed sites
    replayed against a guide trace (as the ELBO reads them); and the code z."""
    guide_tr = poutine.trace(guide).get_trace(x, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, **kwargs)
    return observed_log_prob(model_tr, x.shape[0]), guide_tr.nodes[site]["value"]


def observed_log_prob(model_tr, batch_size: int) -> torch.Tensor:
    """The sum of a model trace's observed sites' log-densities, per datapoint (B,)."""
    total = None
    for node in model_tr.nodes.values():
        if node["type"] == "sample" and node["is_observed"] and not site_is_subsample(node):
            lp = node["fn"].log_prob(node["value"])
            if node.get("mask") is not None:
                lp = lp * node["mask"]
            total = lp if total is None else total + lp
    if total is None:
        raise ConfigError("the model has no observed site: the reconstruction phase needs pyro.sample('x', ..., obs=x)")
    return total.reshape(batch_size)


def latent_sites(trace) -> dict[str, torch.Tensor]:
    return {n: s["value"] for n, s in trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)}


def takes_labels(fn: Callable) -> bool:
    """Whether a model or guide takes the labels: a ``y`` parameter in its signature."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        return "y" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


class _NoModel:
    """A model with no parameters, so ``parameters_of(_NoModel(), guide, x)`` lists the guide's."""

    def __call__(self, *args, **kwargs):
        return None

