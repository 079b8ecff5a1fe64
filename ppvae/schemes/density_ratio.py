"""The implicit-optimal-prior scheme: the ELBO phase, then a per-epoch density-ratio phase.

Each minibatch steps the pair on the ELBO (the model's ``pyro.factor("log_ratio", T(z))`` makes it
the IOP bound, DESIGN fact 8); after each epoch, ``ratio_epochs`` passes over the training set
train T by logistic regression between codes z ~ q(z | x) (label 1) and prior draws z ~ N(0, I)
(label 0), in its own group ``"ratio"`` with its own Adam. T's parameters are never in the ELBO's
group: its gradient there would push T to raise the bound, not to estimate the ratio.

References:
  Takahashi, Iwata, Yamanaka, Yamada & Yagi (2019), Variational Autoencoder with Implicit Optimal
  Priors, AAAI (Algorithm 1: alternate VAE and density-ratio updates).
"""

from __future__ import annotations

from typing import Iterator

import pyro
import torch

from ppvae.errors import ConfigError
from ppvae.schemes.base import ParamGroup, Phase, StepContext
from ppvae.schemes.bound import BoundScheme


class DensityRatioScheme(BoundScheme):
    """ELBO phase per step (group ``"pair"``), T phase per epoch (group ``"ratio"``).

    Works with any model that has a ``log_ratio`` network (a
    :class:`ppvae.density_ratio.DensityRatioEstimator`), ``prior_loc`` / ``prior_scale`` buffers and
    a ``config`` with the ``ratio_*`` settings of :class:`ppvae.models.iop.IOPConfig`, e.g.
    :class:`ppvae.models.iop.IOPVAE`.
    """

    name = "iop"

    def __init__(self, objective=None, num_particles=None):
        super().__init__(objective, num_particles, exclude=lambda model, guide: [model.log_ratio])

    def setup(self, model, guide, x, config) -> None:
        if not hasattr(model, "log_ratio"):
            raise ConfigError(f"the {self.name!r} scheme trains a model's density-ratio network "
                              f"`log_ratio`; {type(model).__name__} has none")
        super().setup(model, guide, x, config)

    def param_groups(self, model, guide, x, config) -> dict[str, ParamGroup]:
        groups = super().param_groups(model, guide, x, config)
        # the authors' T optimizer: Adam at its own learning rate, no schedule, no clipping
        groups["ratio"] = ParamGroup(list(model.log_ratio.parameters()), lr=float(model.config.ratio_lr))
        return groups

    def epoch_phases(self, model, guide, ctx: StepContext) -> Iterator[Phase]:
        cfg, T = model.config, model.log_ratio
        with pyro.validation_enabled(False):
            for _ in range(cfg.ratio_epochs):
                for _, x in ctx.data.batches("train", cfg.ratio_batch_size, ctx.generator, device=ctx.device):
                    z_q = model.posterior_sample(guide, x)  # no grad: T's phase never moves the pair
                    z_p = model.prior_loc + model.prior_scale * torch.randn_like(z_q)
                    loss, accuracy = T.loss_and_accuracy(z_q, z_p)
                    yield Phase("ratio_loss", "ratio", loss, weight=x.shape[0], metrics={"ratio_accuracy": accuracy})

    def epoch_metrics(self, model, guide, ctx) -> dict[str, float]:
        # log Z of the raw N(0, I) exp(T): measured with the correction off, then (re)applied
        cfg = model.config
        if cfg.normalize:
            model.log_z.zero_()
        log_z = model.log_normalizer(cfg.normalizer_samples)
        if cfg.normalize:
            model.log_z.fill_(log_z)
        return {"prior_log_z": log_z}
