"""The semi-supervised adversarial autoencoder as one scheme; without labels, unsupervised clustering.

Per minibatch, in the order of Makhzani et al. (2016, Section 5)::

    reconstruction   (group "autoencoder": model + guide)   min -log p(x | y, z) [+ the cluster-head penalty]
    discriminator_y  (group "discriminator_y": D_y)          one-hot draws y ~ Cat(1/K) real, q(y | x) fake
    generator_y      (group "generator_y": the guide)        fool D_y
    discriminator_z  (group "discriminator_z": D_z)          z ~ N(0, I) real, q(z | x) fake
    generator_z      (group "generator_z": the guide)        fool D_z
    supervised       (group "classifier": the guide)         min -log q(y = label | x) on a labelled minibatch
    [labelled reconstruction (group "autoencoder")            min -log p(x | y = label, z), z from q(z | x): optional]

The first five are :class:`ppvae.schemes.AdversarialScheme` with the two sites ``("y", "z")``: codes
come from the guide's trace, prior draws from the model, and log p(x | y, z) from the model
replayed against the guide, as the ELBO reads a pair. The supervised phase draws its minibatch
from a **fixed labelled subset of the training split** (:func:`ppvae.semisupervised.labelled_subset`:
balanced over classes, fixed by ``label_seed``), never from the minibatch's own labels, which the
scheme ignores: the unlabelled phases see all training images, only the subset's labels are
used. The draw uses the run's checkpointed batch generator (``StepContext.generator``), so a
resumed run is bit-identical. With ``labels=0`` there is no supervised phase: the unsupervised
clustering AAE of Section 6, y its cluster.

``labelled_reconstruction=True`` adds a phase the paper does not have: the labelled minibatch is
also reconstructed with its *true* label as y (the style z still from the guide), as in a public
reimplementation (musyoku/adversarial-autoencoder) and in the M2 model of Kingma et al. (2014). It
tells the decoder directly that y is the class, so that the class has less reason to hide in z.
It draws nothing extra from the generator: with it off, runs are those of before.

The validation metric: the classification error of argmax q(y | x) on the validation split
(``valid_error``) when supervised, so ``best.pt`` is chosen without the test set; the
reconstruction error without labels (``valid_cluster_error``, clusters labelled by the majority of
their validation members, is logged alongside).

References:
  Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), Adversarial Autoencoders, Sections 5-7.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import torch
from pyro import poutine
from torch import nn

from ppvae.errors import ConfigError
from ppvae.schemes.adversarial import AdversarialScheme, _NoModel, observed_log_prob
from ppvae.schemes.base import ParamGroup, Phase, StepContext
from ppvae.schemes.bound import parameters_of
from ppvae.semisupervised import ALL, class_probabilities, classification_error, clustering_error, labelled_subset


class CategoricalAdversarialScheme(AdversarialScheme):
    """Reconstruction, a GAN on y and a GAN on z, and a supervised phase (module docstring).

    Options (each ``None`` reads the model's config, e.g. ``--set labels=1000`` on the command line):
    ``labels`` (labelled training examples: a multiple of the class count, ``"all"``, 0 for none,
    or your own subset as a 1-D tensor of training-split indices), ``label_seed``, ``hidden`` (both discriminators' widths; default the model's),
    ``supervised_batch_size`` (default the run's batch size; never more than the subset),
    ``supervised_weight``, ``supervised_lr`` (default the run's lr), ``labelled_reconstruction``
    (reconstruct the labelled minibatch with its true label as y: module docstring; default the
    model's config, else off), and the adversarial options of
    :class:`AdversarialScheme` (``noise_std``, ``generator_loss``, step counts, learning rates).
    """

    name = "aae-categorical"

    def __init__(self, discriminators: Mapping[str, nn.Module] | None = None, *,
                 labels: int | str | torch.Tensor | None = None,
                 label_seed: int | None = None, class_site: str = "y", style_site: str = "z",
                 hidden: Sequence[int] | None = None, supervised_batch_size: int | None = None,
                 supervised_weight: float = 1.0, supervised_lr: float | None = None,
                 labelled_reconstruction: bool | None = None, **options):
        super().__init__(discriminators, site=(class_site, style_site), hidden=hidden or (1000, 1000), **options)
        self._given: torch.Tensor | None = None  # a subset of the user's own, as training indices
        if isinstance(labels, (torch.Tensor, list, tuple)):
            self._given = torch.as_tensor(labels)
            if self._given.dim() != 1 or self._given.is_floating_point() or self._given.numel() == 0 \
                    or self._given.unique().numel() != self._given.numel():
                raise ConfigError("labels given as indices must be distinct integer indices into the training split, "
                                  "a non-empty 1-D tensor")
            self._given = self._given.long().sort().values
            labels = int(self._given.numel())
        elif labels is not None:
            _check_labels(labels)
        if supervised_batch_size is not None and (int(supervised_batch_size) != supervised_batch_size or supervised_batch_size < 1):
            raise ConfigError(f"supervised_batch_size must be a positive integer, got {supervised_batch_size!r}")
        if not supervised_weight >= 0:
            raise ConfigError(f"supervised_weight must be zero or positive, got {supervised_weight!r}")
        self.labels, self.label_seed, self._hidden_given = labels, label_seed, hidden is not None
        self.class_site, self.style_site = class_site, style_site
        self.supervised_batch_size, self.w_sup, self.sup_lr = supervised_batch_size, float(supervised_weight), supervised_lr
        if labelled_reconstruction is not None and not isinstance(labelled_reconstruction, bool):
            raise ConfigError(f"labelled_reconstruction must be true or false, got {labelled_reconstruction!r}")
        self.labelled_reconstruction = labelled_reconstruction
        self._subset: tuple[int, torch.Tensor] | None = None  # (id of the dataset, indices): rebuilt, never saved

    @property
    def supervised(self) -> bool:
        return self.labels != 0

    @property
    def monitor(self) -> str:
        return "valid_error" if self.supervised else "valid_reconstruction"

    # --- setup ------------------------------------------------------------------------------

    def setup(self, model, guide, x, config) -> None:
        model_config = getattr(model, "config", None)
        if not self._hidden_given and getattr(model_config, "hidden", None):
            self.hidden = tuple(model_config.hidden)  # modest networks stay modest, discriminators too
        if self.labels is None:
            self.labels = getattr(model_config, "labels", 0)
            _check_labels(self.labels)
        if self.label_seed is None:
            self.label_seed = int(getattr(model_config, "label_seed", 0))
        if self.labelled_reconstruction is None:
            self.labelled_reconstruction = bool(getattr(model_config, "labelled_reconstruction", False))
        super().setup(model, guide, x, config)
        self.num_classes = int(getattr(model_config, "num_classes", 0) or self._probe_classes(guide, x))
        if self.supervised and self._given is None and self.labels != ALL and self.labels % self.num_classes:
            raise ConfigError(f"labels={self.labels} cannot be balanced over {self.num_classes} classes: "
                              f"use a multiple of {self.num_classes}")

    def _probe_classes(self, guide, x) -> int:
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
            return int(poutine.trace(guide).get_trace(x).nodes[self.class_site]["value"].shape[-1])

    def param_groups(self, model, guide, x, config) -> dict[str, ParamGroup]:
        groups = super().param_groups(model, guide, x, config)
        if self.supervised:
            groups["classifier"] = ParamGroup.from_config(parameters_of(_NoModel(), guide, x), config)
            if self.sup_lr is not None:
                groups["classifier"].lr = float(self.sup_lr)
        return groups

    # --- one step ---------------------------------------------------------------------------

    def step(self, model, guide, x, y, ctx: StepContext) -> Iterator[Phase]:
        # y, the minibatch's labels, is deliberately dropped: only the labelled subset's are used
        yield from super().step(model, guide, x, None, ctx)
        if self.supervised:
            x_l, labels = self.labelled_minibatch(ctx)
            yield self.supervised_phase(guide, ctx, x_l, labels)
            if self.labelled_reconstruction:
                yield self.labelled_reconstruction_phase(model, guide, x_l, labels)

    def reconstruction_phase(self, model, guide, x, kwargs, ctx: StepContext) -> Phase:
        phase = super().reconstruction_phase(model, guide, x, kwargs, ctx)
        penalty = getattr(model, "penalty", None)
        if callable(penalty):  # the cluster heads' distance cost (zero without heads)
            p = penalty()
            phase.loss = phase.loss + p
            phase.metrics["head_distance_penalty"] = p.detach()
        return phase

    def labelled_minibatch(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of a minibatch of the labelled subset, on the run's device."""
        subset = self.labelled_indices(ctx.data)
        size = min(self.supervised_batch_size or ctx.config.batch_size, subset.numel())
        # drawn without replacement with the run's checkpointed generator: bit-identical on resume
        pick = subset[torch.randperm(subset.numel(), generator=ctx.generator)[:size]]
        x = ctx.data.train.index_select(0, pick)
        if ctx.data.dynamic_binarization:
            x = (torch.rand(x.shape, generator=ctx.generator) < x).to(torch.float32)
        return x.to(ctx.device), ctx.data.labels("train").index_select(0, pick).to(ctx.device)

    def supervised_phase(self, guide, ctx: StepContext, x: torch.Tensor, labels: torch.Tensor) -> Phase:
        """Cross-entropy of q(y | x) on a minibatch of the labelled subset."""
        size = x.shape[0]
        probs = poutine.trace(guide).get_trace(x).nodes[self.class_site]["value"]  # (B, K)
        # log of the softmax value: its gradient is exact while q(y = label | x) > float32's tiny
        log_q = probs.clamp_min(torch.finfo(probs.dtype).tiny).log().gather(1, labels[:, None]).squeeze(1)
        ce = -log_q.mean()
        accuracy = (probs.argmax(-1) == labels).float().mean()
        return Phase("supervised_loss", "classifier", self.w_sup * ce, value=ce.detach(), weight=size,
                     metrics={"supervised_accuracy": accuracy.detach()})

    def labelled_reconstruction_phase(self, model, guide, x: torch.Tensor, labels: torch.Tensor) -> Phase:
        """-log p(x | y = label, z) on the labelled minibatch, z from the guide, y the true label."""
        guide_tr = poutine.trace(guide).get_trace(x)
        y = guide_tr.nodes[self.class_site]
        # the true label replaces the guide's y; the style z stays the guide's
        y["value"] = torch.nn.functional.one_hot(labels, y["value"].shape[-1]).to(y["value"].dtype)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
        log_lik = observed_log_prob(model_tr, x.shape[0])
        loss = -log_lik.mean()
        return Phase("labelled_reconstruction_loss", "autoencoder", self.w_rec * loss, value=loss.detach(),
                     weight=x.shape[0])

    def labelled_indices(self, data) -> torch.Tensor:
        """Indices into ``data.train`` of the labelled subset (a pure function of the training
        labels, ``labels`` and ``label_seed``: recomputed, not checkpointed)."""
        if self._subset is None or self._subset[0] != id(data):
            train_labels = data.labels("train")
            if train_labels is None:
                raise ConfigError(f"the semi-supervised scheme needs labels, and {data.name} has none: use a labelled "
                                  "dataset, or labels=0 for unsupervised clustering")
            if self._given is not None:
                if self._given.min() < 0 or self._given.max() >= train_labels.numel():
                    raise ConfigError(f"labelled indices must lie in 0..{train_labels.numel() - 1}, the training split")
                subset = self._given
            else:
                subset = labelled_subset(train_labels, self.labels, num_classes=self.num_classes, seed=self.label_seed)
            self._subset = (id(data), subset)
        return self._subset[1]

    # --- validation -------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, model, guide, x, ctx, batch_size: int = 500) -> dict[str, float]:
        out = super().validate(model, guide, x, ctx, batch_size)
        labels = ctx.data.labels("valid")
        if labels is None:
            if self.supervised:
                raise ConfigError("the validation split has no labels: the semi-supervised scheme selects models by "
                                  "its classification error")
            return out
        # The classifier reads the grey levels, not the fixed binary draw of the validation
        # images the reconstruction is scored on (Dataset.grey_levels): one draw loses information.
        # A dataset built by hand without them is classified as given (strict=False).
        x_class = ctx.data.grey_levels("valid", strict=False).to(x.device)
        assigned = class_probabilities(guide, x_class, site=self.class_site, batch_size=batch_size).argmax(-1).cpu()
        if self.supervised:
            out["valid_error"] = classification_error(assigned, labels)
        else:
            out["valid_cluster_error"], _ = clustering_error(assigned, labels, assigned, labels, self.num_classes)
        return out

    def describe(self) -> dict:
        return {**super().describe(), "labels": self.labels, "label_seed": self.label_seed,
                "own_subset": self._given is not None}


def _check_labels(labels) -> None:
    if labels == ALL:
        return
    if isinstance(labels, bool) or not isinstance(labels, int) or labels < 0:
        raise ConfigError(f"labels must be 0 (unsupervised), a positive number of labelled examples or 'all', got {labels!r}")
