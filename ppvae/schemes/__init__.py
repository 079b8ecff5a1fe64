"""Training schemes: what one training step computes (see :mod:`ppvae.schemes.base` for the contract).

``SCHEMES`` maps names to classes; ``ppvae.fit(..., scheme=...)`` takes a name, a scheme object of
your own, or ``None`` for the model's ``default_scheme`` (``"bound"`` when it declares none).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from ppvae.errors import ConfigError
from ppvae.schemes.adversarial import AdversarialScheme
from ppvae.schemes.alpha_gan import AlphaGANScheme
from ppvae.schemes.categorical import CategoricalAdversarialScheme
from ppvae.schemes.base import ParamGroup, Phase, Scheme, StepContext
from ppvae.schemes.bound import BoundScheme, parameters_of
from ppvae.schemes.density_ratio import DensityRatioScheme

SCHEMES: dict[str, Callable[[], Scheme]] = {
    "bound": BoundScheme,  # elbo / elbo-analytic / iwae, chosen by TrainConfig.objective
    "iop": DensityRatioScheme,
    "aae": AdversarialScheme,  # reconstruction + a GAN matching q(z) to the model's prior
    "aae-categorical": CategoricalAdversarialScheme,  # the aae on y and z + a supervised phase (semi-supervised / clustering)
    "alpha-gan": AlphaGANScheme,  # L1 autoencoder + a GAN on x and a GAN on z, four networks
}


def get_scheme(scheme: str | Scheme | None, model: Any = None) -> Scheme:
    """A scheme object: ``scheme`` itself, a new one by name, or the model's default."""
    if isinstance(scheme, Scheme):
        return scheme
    if scheme is None or scheme == "auto":
        scheme = getattr(model, "default_scheme", "bound")
    if scheme not in SCHEMES:
        close = difflib.get_close_matches(str(scheme), SCHEMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown training scheme {scheme!r}; known: {', '.join(SCHEMES)}, or pass a "
                          f"ppvae.schemes.Scheme object.{hint}")
    return SCHEMES[scheme]()


__all__ = ["Scheme", "ParamGroup", "Phase", "StepContext", "BoundScheme", "DensityRatioScheme", "AdversarialScheme", "AlphaGANScheme", "SCHEMES",
           "get_scheme", "parameters_of"]
