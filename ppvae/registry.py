"""The model families: one line each. Tests parametrized over ``FAMILIES`` pick a new one up.

A family is a config dataclass and a function building ``(model, guide)`` for a data dimension.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable

from ppvae.errors import ConfigError
from ppvae.options import coerce_options
from ppvae.guides.ae import AEEncoder
from ppvae.guides.aae import AAEEncoder
from ppvae.guides.aae_categorical import CategoricalAAEEncoder
from ppvae.guides.alpha_gan import AlphaGANEncoder
from ppvae.guides.vae import GaussianEncoder
from ppvae.models.ae import AEConfig, AEModel
from ppvae.models.aae import AAEConfig, AAEModel
from ppvae.models.aae_categorical import CategoricalAAEConfig, CategoricalAAEModel
from ppvae.models.alpha_gan import AlphaGANConfig, AlphaGANModel
from ppvae.models.bayes_vae import BayesVAE, BayesVAEConfig
from ppvae.guides.bayes_vae import BayesVAEGuide
from ppvae.models.iop import IOPConfig, IOPVAE
from ppvae.models.mog_prior import MoGPriorConfig, MoGPriorVAE
from ppvae.models.vae import VAE, VAEConfig
from ppvae.models.vampprior import VampPriorConfig, vampprior_pair


@dataclass(frozen=True)
class Family:
    config: type
    build: Callable[[int, Any], tuple[Any, Any]]  # (x_dim, config) -> (model, guide)
    description: str


FAMILIES: dict[str, Family] = {
    "vae": Family(VAEConfig, lambda d, c: (VAE(d, c), GaussianEncoder(d, c)), "VAE / IWAE pair, 1 or 2 stochastic layers (Kingma & Welling 2014; Burda et al. 2016)"),
    "vampprior": Family(VampPriorConfig, vampprior_pair, "VAE with a VampPrior: mixture of the encoder's posteriors at K learned pseudo-inputs (Tomczak & Welling 2018)"),
    "mog-prior": Family(MoGPriorConfig, lambda d, c: (MoGPriorVAE(d, c), GaussianEncoder(d, c)), "VAE with a learned mixture-of-Gaussians prior, the VampPrior paper's baseline (Tomczak & Welling 2018)"),
    "aae": Family(AAEConfig, lambda d, c: (AAEModel(d, c), AAEEncoder(d, c)), "adversarial autoencoder: Gaussian, 10-Gaussian mixture or swiss-roll prior; label to the discriminator or the decoder (Makhzani et al. 2016)"),
    "aae-categorical": Family(CategoricalAAEConfig, lambda d, c: (CategoricalAAEModel(d, c), CategoricalAAEEncoder(d, c)), "adversarial autoencoder with a categorical y and a style z: semi-supervised classification (labels=100/1000/all), unsupervised clustering (labels=0), 2-D cluster heads (Makhzani et al. 2016)"),
    "alpha-gan": Family(AlphaGANConfig, lambda d, c: (AlphaGANModel(d, c), AlphaGANEncoder(d, c)), "alpha-GAN: L1 autoencoder with a data discriminator and a code discriminator, implicit encoder z = E(x) (Rosca et al. 2017)"),
    "iop": Family(IOPConfig, lambda d, c: (IOPVAE(d, c), GaussianEncoder(d, c)), "VAE with implicit optimal prior: N(0,I) prior corrected by a density-ratio net T(z) (Takahashi et al. 2019)"),
    "bayes-vae": Family(BayesVAEConfig, lambda d, c: _bayes_vae_pair(d, c), "VAE with full variational Bayes over its decoder weights: weight priors N(0, s^2) or a scale mixture, mean-field Normal posterior, optional local reparameterization (Kingma & Welling 2014, app. F; Blundell et al. 2015)"),
    "ae": Family(AEConfig, lambda d, c: (AEModel(d, c), AEEncoder(d, c)), "plain deterministic autoencoder (Delta encoder, flat code prior): cross-entropy or squared-error reconstruction, trained by the bound scheme"),
}


def _bayes_vae_pair(x_dim: int, config: BayesVAEConfig):
    model, guide = BayesVAE(x_dim, config), BayesVAEGuide(x_dim, config)
    model.attach_posterior(guide.weights)  # the model decodes and samples at q(w), which the guide owns
    return model, guide


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        close = difflib.get_close_matches(name, FAMILIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(FAMILIES)} (see `ppvae list`).{hint}")
    return FAMILIES[name]


def make_config(name: str, options: dict[str, Any] | None = None) -> Any:
    """The family's config dataclass built from ``options``; unknown keys are an error."""
    family = get_family(name)
    fields = {f.name for f in dataclasses.fields(family.config)}
    unknown = set(options or {}) - fields
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {sorted(unknown)}; its options: {sorted(fields)}")
    try:
        return family.config(**coerce_options(family.config, options))
    except TypeError as e:
        raise ConfigError(f"bad options for model {name!r}: {e}") from e


def build(name: str, x_dim: int, options: dict[str, Any] | None = None, *, seed: int | None = None):
    """``(model, guide, config)`` of family ``name`` for data of dimension ``x_dim``.

    With ``seed``, torch (and Python, NumPy) are seeded first, so the initial weights are the same
    every time: pass the seed you give ``ppvae.fit`` for a run that repeats exactly."""
    config = make_config(name, options)
    if seed is not None:
        from ppvae.train import seed_everything

        seed_everything(seed)
    model, guide = get_family(name).build(int(x_dim), config)
    return model, guide, config
