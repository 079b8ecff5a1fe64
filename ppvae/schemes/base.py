"""The training-scheme contract: what one training step computes, separated from how training runs.

A **scheme** owns the *what*; the trainer (:func:`ppvae.fit`) owns the *how*, identically for every
scheme. A scheme

- declares its **parameter groups** (:meth:`Scheme.param_groups`): named lists of tensors, each with
  its own optimizer settings (learning rate and its schedule, Adam betas/eps, weight decay, gradient
  clipping). Groups may overlap (an adversarial autoencoder's generator phase steps the encoder,
  which its reconstruction phase also steps); each group gets its own optimizer.
- runs **one training step** on a minibatch (:meth:`Scheme.step`) as an ordered sequence of
  :class:`Phase` objects, each a scalar loss over one group. ``step`` is a generator: the trainer
  steps the phase's group *before* the generator resumes, so a later phase sees the parameters an
  earlier one updated (detach what you carry across phases).
- may add **per-epoch phases** (:meth:`Scheme.epoch_phases`, e.g. the implicit optimal prior's
  density-ratio network, trained between epochs), yielded the same way.
- names the **validation metric** early stopping and ``best.pt`` follow (:attr:`Scheme.monitor`,
  maximized or minimized per :attr:`Scheme.mode`), computed by :meth:`Scheme.validate`: the bound
  for the ELBO schemes, e.g. reconstruction error for a scheme without one.
- may own networks of its own (discriminators, classifiers): a scheme is an ``nn.Module``, so its
  submodules follow ``.to(device)`` and are checkpointed with the pair. Build them in
  :meth:`Scheme.setup`, which the trainer calls once, after seeding and before the optimizers.

For every phase the trainer checks the loss is finite *before* any optimizer steps on it (and, when
the group clips, the gradient norm), zeroes the group's gradients (a generator backward fills a
discriminator's too), backpropagates, clips, steps, and logs the phase's value. It schedules every
group's learning rate per epoch, shows every phase's running loss in the progress bar, writes
``metrics.jsonl``, checkpoints every network and optimizer atomically, stops early, and resumes
bit-identically. A user passes a scheme object to ``ppvae.fit(..., scheme=MyScheme())`` just as they
pass their own model/guide pair: ``tutorials/04_your_own_scheme.py`` writes one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
from torch import nn

if TYPE_CHECKING:
    from ppvae.data import Dataset
    from ppvae.train import TrainConfig


FUSED_ADAM_DEVICES = ("cpu", "cuda")


@dataclass
class ParamGroup:
    """Tensors stepped by one optimizer, with that optimizer's settings.

    :meth:`from_config` copies the run's ``TrainConfig`` (lr, schedule, Adam settings, clipping);
    a scheme overrides what its group does differently (e.g. a discriminator's own learning rate).
    """

    params: list[torch.Tensor]
    lr: float = 1e-3
    lr_schedule: str = "constant"  # a name in ppvae.schedules.LR_SCHEDULES, a function of the epoch
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None  # clip this group's gradient norm to this value

    @classmethod
    def from_config(cls, params: Iterable[torch.Tensor], config: TrainConfig, **overrides) -> ParamGroup:
        settings = dict(lr=config.lr, lr_schedule=config.lr_schedule, betas=tuple(config.adam_betas),
                        eps=config.adam_eps, weight_decay=config.weight_decay, grad_clip=config.grad_clip)
        settings.update(overrides)
        return cls(list(params), **settings)

    def optimizer(self) -> torch.optim.Optimizer:
        # torch's fused Adam: one kernel over the group's tensors instead of a dozen elementwise
        # ops per tensor; the same update up to rounding (about 1 ulp), and 4x cheaper on the CPU for
        # the IWAE paper's MLP (benchmarks/README.md, "Adam"). Where it cannot run, the default.
        fused = bool(self.params) and all(p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in self.params)
        return torch.optim.Adam(self.params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                                fused=True if fused else None)


@dataclass
class Phase:
    """One loss over one parameter group.

    ``loss`` is what is backpropagated; ``value`` is what is logged (e.g. nats per datapoint when
    the loss is scaled to the whole dataset; default: the loss), averaged over the epoch with weight
    ``weight`` (e.g. the batch size) into the metric called ``name``. ``metrics`` are further
    tensors to average the same way (a discriminator's accuracy).
    """

    name: str
    group: str
    loss: torch.Tensor
    value: torch.Tensor | None = None
    weight: float = 1.0
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class StepContext:
    """Where training is: passed to every scheme call."""

    config: TrainConfig
    epoch: int  # 0-based
    step: int  # 0-based step within the epoch
    steps_per_epoch: int
    num_data: int  # N, the training-set size
    device: torch.device
    generator: torch.Generator  # the run's CPU generator for batching (checkpointed)
    data: Dataset

    @property
    def progress(self) -> float:
        """Fractional epochs done: ``epoch + step / steps_per_epoch``."""
        return self.epoch + self.step / self.steps_per_epoch

    @property
    def kl_weight(self) -> float:
        """The KL warm-up weight beta at this point of training (1 without warm-up)."""
        from ppvae.schedules import kl_weight

        return kl_weight(self.progress, self.config.kl_warmup_epochs)


class Scheme(nn.Module):
    """Base class of training schemes; see the module docstring for the contract.

    Override :meth:`param_groups` and :meth:`step`; usually :meth:`validate` and :attr:`monitor`;
    :meth:`setup` and :meth:`epoch_phases` when the scheme needs them.
    """

    name: str = "custom"
    mode: str = "max"  # "max" if a larger monitor value is better, "min" otherwise

    @property
    def monitor(self) -> str:
        """The validation metric early stopping and ``best.pt`` follow (a key of :meth:`validate`)."""
        raise NotImplementedError

    def setup(self, model: Callable, guide: Callable, x: torch.Tensor, config: TrainConfig) -> None:
        """Called once before training with a probe batch ``x``: build the scheme's own networks."""

    def param_groups(self, model: Callable, guide: Callable, x: torch.Tensor, config: TrainConfig) -> dict[str, ParamGroup]:
        """Named parameter groups, one optimizer each."""
        raise NotImplementedError

    def step(self, model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None, ctx: StepContext) -> Iterator[Phase]:
        """Yield the phases of one training step on minibatch ``x`` (labels ``y`` if the data has them)."""
        raise NotImplementedError

    def epoch_phases(self, model: Callable, guide: Callable, ctx: StepContext) -> Iterator[Phase]:
        """Phases run after each epoch's steps (none by default)."""
        return iter(())

    def epoch_metrics(self, model: Callable, guide: Callable, ctx: StepContext) -> dict[str, float]:
        """Extra per-epoch metrics computed after :meth:`epoch_phases` (none by default)."""
        return {}

    @torch.no_grad()
    def validate(self, model: Callable, guide: Callable, x: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        """Validation metrics on the held-out ``x``; must contain :attr:`monitor`."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records about the scheme (compared on resume)."""
        return {"name": self.name}

    def forward(self, *args, **kwargs):  # a scheme is stepped, not called
        raise TypeError(f"{type(self).__name__} is a training scheme: pass it to ppvae.fit(..., scheme=...)")
