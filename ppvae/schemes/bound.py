"""The single-phase scheme: maximize a bound on log p(x) (``elbo``, ``iwae``, ... : ``ppvae.OBJECTIVES``).

One group, ``"pair"`` (every trainable tensor of model and guide), one phase per minibatch: minus
the objective's bound, summed over the minibatch and scaled by N / B, with the KL warm-up weight of
the moment. The validation metric is the same bound per datapoint on the validation split.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from pyro import poutine

from ppvae.errors import ConfigError
from ppvae.objectives import Objective, get_objective
from ppvae.schemes.base import ParamGroup, Phase, Scheme, StepContext
from ppvae.traces import raise_if_shape_error


class BoundScheme(Scheme):
    """``loss = -(N / B) sum_b bound(x_b)``, one Adam over the pair: the classic VAE/IWAE training.

    ``objective`` / ``num_particles`` default to the run's ``TrainConfig`` (``objective``,
    ``num_particles``, ``valid_particles``); ``exclude`` lists modules some other phase trains
    (their parameters stay out of this group: e.g. a density-ratio network inside the model).
    """

    name = "bound"
    mode = "max"
    compiles = True  # honours TrainConfig.compile

    def __init__(self, objective: str | Objective | None = None, num_particles: int | None = None,
                 exclude: Callable[[Callable, Callable], list[torch.nn.Module]] | None = None):
        super().__init__()
        self._objective_spec = (objective, num_particles)
        self._exclude = exclude
        self.objective: Objective | None = None
        self.valid_objective: Objective | None = None
        self._compiled: Callable | None = None  # objective.loss under torch.compile (TrainConfig.compile)

    def setup(self, model, guide, x, config) -> None:
        objective, k = self._objective_spec
        if objective is None:  # the run's objective, with its options and estimator
            self.objective = get_objective(config.objective, k or config.num_particles, config.grad_estimator,
                                           **config.objective_options)
        else:
            self.objective = get_objective(objective, k or config.num_particles)
        self.valid_objective = self.objective.with_particles(config.valid_particles or self.objective.num_particles)
        self._compiled = None
        if getattr(config, "compile", False):
            from ppvae.compile import compiled_loss

            self._compiled = compiled_loss(self.objective, model, guide, x)
            if self._compiled is None:
                raise ConfigError(
                    "compile=True compiles pairs whose model and guide are ppvae.direct.StoryModule (every built-in "
                    f"family); this pair ({type(model).__name__}, {type(guide).__name__}) runs through Pyro's traces, "
                    "which break torch.compile's graph at every site: leave compile off"
                )

    @property
    def monitor(self) -> str:
        return f"valid_{self.objective.name}"

    def param_groups(self, model, guide, x, config) -> dict[str, ParamGroup]:
        excluded = self._exclude(model, guide) if self._exclude else ()
        return {"pair": ParamGroup.from_config(parameters_of(model, guide, x, excluded), config)}

    def step(self, model, guide, x, y, ctx: StepContext) -> Iterator[Phase]:
        beta = ctx.kl_weight
        if self._compiled is not None and beta == 1.0:  # during a KL warm-up the eager loss (ppvae.compile)
            loss = self._compiled(model, guide, x, ctx.num_data)
        else:
            loss = self.objective.loss(model, guide, x, num_data=ctx.num_data, beta=beta)
        # the loss is N/B times the minibatch sum: loss / N is this batch's mean, weighted by B
        yield Phase("train_loss", "pair", loss, value=loss.detach() / ctx.num_data, weight=x.shape[0])

    @torch.no_grad()
    def validate(self, model, guide, x, ctx, batch_size: int = 500) -> dict[str, float]:
        total = sum(float(self.valid_objective.bound(model, guide, x[i : i + batch_size]).sum())
                    for i in range(0, x.shape[0], batch_size))
        return {self.monitor: total / x.shape[0]}

    def describe(self) -> dict:
        return {"name": self.name, "objective": self.objective.name, "num_particles": self.objective.num_particles,
                "objective_options": self.objective.options(), "grad_estimator": self.objective.grad_estimator}


def parameters_of(model: Callable, guide: Callable, x: torch.Tensor,
                  excluded: tuple[torch.nn.Module, ...] | list = (), **kwargs) -> list[torch.nn.Parameter]:
    """Every trainable tensor of the pair, each once: the modules' parameters, plus any
    ``pyro.param`` the programs create (found with one param-only trace of ``guide(x, **kwargs)``
    and the replayed model), minus ``excluded``'s."""
    skip = {id(p) for m in excluded for p in m.parameters()}
    params: dict[int, torch.Tensor] = {}
    for obj in (model, guide):
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                if id(p) not in skip:
                    params.setdefault(id(p), p)
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
        try:
            guide_tr = poutine.trace(guide, param_only=True).get_trace(x, **kwargs)
            model_tr = poutine.trace(poutine.replay(model, guide_tr), param_only=True).get_trace(x, **kwargs)
        except ValueError as e:
            raise_if_shape_error(e)  # a missing .to_event: say so, not Pyro's bare shape mismatch
            raise
    for tr in (guide_tr, model_tr):
        for site in tr.nodes.values():
            v = site["value"]
            v = v.unconstrained() if hasattr(v, "unconstrained") else v
            if v.requires_grad and id(v) not in skip:
                params.setdefault(id(v), v)
    if not params:
        raise ConfigError("the model/guide pair has no trainable parameters")
    return list(params.values())

