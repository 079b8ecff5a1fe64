"""The trainer: ``ppvae.fit`` runs any training scheme over any model/guide pair.

A scheme (:mod:`ppvae.schemes`) says what a step computes: its parameter groups and, per minibatch,
an ordered list of phases (a loss over one group each), plus optional per-epoch phases and the
validation metric to follow. The trainer does the rest, the same way for every scheme:

    seed; probe batch; scheme.setup; one Adam per parameter group       (Trainer.__init__, _build)
    for each epoch:
        for each minibatch: for each phase: check finite -> zero -> backward -> clip -> step
        per-epoch phases; validation; metrics.jsonl; atomic last.pt / best.pt; early stopping

Everything random flows from torch's global generator (latents, dropout) and one CPU generator for
batching and dynamic binarization, both saved in each checkpoint with every network and optimizer,
so a resumed run ends bit-identical to an uninterrupted one. Learning-rate schedules and KL warm-up
are pure functions of the epoch (``ppvae.schedules``). A non-finite loss or gradient norm stops
training before any optimizer steps on it, the in-memory pair is put back to the last good epoch,
and no checkpoint ever holds a non-finite parameter.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyro
import torch

from ppvae import distributed as pdist
from ppvae.checkpoint import load, save_atomic
from ppvae.data import Dataset, check_data, from_array
from ppvae.errors import CheckpointError, ConfigError, TrainingDivergedError
from ppvae.nn import eval_mode
from ppvae.objectives import OBJECTIVES, Objective, get_objective
from ppvae.runs_state import RunFolder
from ppvae.schedules import LR_SCHEDULES, kl_weight, lr_factor
from ppvae.schemes import Phase, Scheme, StepContext, get_scheme, parameters_of  # noqa: F401 (re-export)


@dataclass
class TrainConfig:
    objective: str = "elbo-analytic"  # a name in ppvae.OBJECTIVES: "elbo" (MC KL), "elbo-analytic", "iwae", "renyi", ...
    num_particles: int = 1  # L samples per datapoint for the ELBOs, k for the importance-weighted bounds
    objective_options: dict = field(default_factory=dict)  # the objective's own options, e.g. {"alpha": 0.5} for renyi
    grad_estimator: str = "reparam"  # the guide's gradient: "reparam", "stl" (elbo) or "dreg" (iwae, renyi)
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant" | "iwae" (Burda's 3^i stages) | "exponential" | "cosine"
    schedule_scale: float = 1.0  # "iwae": multiplies each stage's 3^i epochs (shorter budgets)
    lr_gamma: float = 0.99  # "exponential": per-epoch decay
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8  # the IWAE paper used 1e-4
    weight_decay: float = 0.0
    kl_warmup_epochs: float = 0.0  # linear KL warm-up over this many epochs (0: none)
    grad_clip: float | None = None  # clip each group's gradient norm to this value (None: no clipping)
    early_stopping_patience: int | None = None  # stop after this many epochs without a better valid metric
    valid_particles: int | None = None  # particles for the validation bound (default: num_particles)
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when present) | "cpu" | "cuda" | "cuda:N"
    progress: bool = True
    scheme: str = "auto"  # training scheme by name; "auto": the model's default_scheme, else "bound"
    compile: bool = False  # torch.compile the bound scheme's loss (story-module pairs; see ppvae.compile)

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
        for name in ("epochs", "batch_size", "num_particles"):
            _check(name, getattr(self, name), lambda v: int(v) == v and v >= 1, "a positive integer")
        for name in ("lr", "adam_eps", "schedule_scale"):
            _check(name, getattr(self, name), lambda v: v > 0, "a positive number")
        _check("lr_gamma", self.lr_gamma, lambda v: 0 < v <= 1, "in (0, 1]")
        _check("weight_decay", self.weight_decay, lambda v: v >= 0, "zero or positive")
        _check("kl_warmup_epochs", self.kl_warmup_epochs, lambda v: v >= 0, "zero (no warm-up) or a positive number of epochs")
        if self.grad_clip is not None:
            _check("grad_clip", self.grad_clip, lambda v: v > 0,
                   "a positive maximum gradient norm (0 would freeze training); omit it for no clipping")
        for name in ("early_stopping_patience", "valid_particles"):
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), lambda v: int(v) == v and v >= 1, "a positive integer (or None)")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be True or False, got {self.compile!r}")
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        if isinstance(self.objective, Objective):  # an objective object: recorded as plain settings (its own win)
            self._take_objective(self.objective)
        if not isinstance(self.objective_options, dict):
            raise ConfigError(f"objective_options must be a dict of option names to values, got {self.objective_options!r}")
        self.objective_options = dict(self.objective_options)
        # validates the name, options and estimator early, and the validation particles against them
        obj = get_objective(self.objective, self.num_particles, self.grad_estimator, **self.objective_options)
        if self.valid_particles is not None:
            obj.with_particles(self.valid_particles)

    def _take_objective(self, obj: Objective) -> None:
        if OBJECTIVES.get(obj.name) is not type(obj):
            raise ConfigError(
                f"TrainConfig records objectives by name, and {type(obj).__name__} is not a registered objective "
                "(ppvae.OBJECTIVES); pass your own objective as fit(..., scheme=BoundScheme(objective=obj))"
            )
        self.objective, self.num_particles = obj.name, obj.num_particles
        self.objective_options, self.grad_estimator = obj.options(), obj.grad_estimator


def _check(name: str, value: Any, ok: Callable[[float], bool], what: str) -> None:
    try:
        good = not isinstance(value, bool) and math.isfinite(float(value)) and ok(float(value))
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"{name} must be {what}, got {value!r}")


@dataclass
class FitResult:
    history: list[dict]  # one dict of metrics per epoch (of the whole run, resumed sessions included)
    best_valid: float | None  # best value of the scheme's monitored metric (the validation bound)
    stopped_early: bool
    out_dir: Path | None
    epochs_trained: int = 0  # epochs trained by this call (0 when a resumed run had nothing left)
    message: str = ""  # why nothing was trained, when nothing was


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    from ppvae.device import resolve_device as resolve

    return resolve(device)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python and NumPy. Call it *before* building networks: their
    initial weights come from torch's generator (``ppvae.build(..., seed=...)`` does this)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def fit(
    model: Callable,
    guide: Callable,
    data: Dataset | torch.Tensor | np.ndarray,
    config: TrainConfig | None = None,
    *,
    scheme: str | Scheme | None = None,
    out_dir: str | Path | None = None,
    resume: bool | str = False,
    overwrite: bool = False,
    meta: dict[str, Any] | None = None,
    callbacks: Sequence[Callable[[dict], None]] = (),
    **overrides,
) -> FitResult:
    """Train ``model``/``guide`` on ``data`` with a training scheme; return the per-epoch history.

    ``data`` is a :class:`ppvae.data.Dataset` or an (N, D) array (trained on whole, no validation).
    ``config`` fields can also be given as keyword overrides (``fit(m, g, x, epochs=5)``).
    ``scheme`` is a name in ``ppvae.schemes.SCHEMES``, your own :class:`ppvae.schemes.Scheme`, or
    None for ``config.scheme`` (by default the model's ``default_scheme``, else ``"bound"``: the
    objective ``config.objective``). With ``out_dir``, each epoch appends to ``metrics.jsonl`` and
    atomically rewrites ``last.pt`` (and ``best.pt`` when the validation metric improves). A folder
    that already holds a run is refused unless ``resume=True`` (continue from ``last.pt``;
    ``resume="best"`` from ``best.pt``) or ``overwrite=True``. ``meta`` is stored in the checkpoints
    (the CLI records the model family, its options and the dataset). Each callback gets the epoch's
    metrics dict. Seed before building the networks (:func:`seed_everything`): ``config.seed``
    fixes the batches and latents, not the weights the pair was built with.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    return Trainer(model, guide, data, config, scheme, out_dir, meta, callbacks).run(resume, overwrite)


class Trainer:
    """One run of one scheme: built by :func:`fit`; see the module docstring."""

    def __init__(self, model, guide, data, config: TrainConfig, scheme, out_dir, meta, callbacks):
        if not isinstance(data, Dataset):
            data = from_array(data, valid_fraction=0.0, test_fraction=0.0)
        self.model, self.guide, self.data, self.config = model, guide, data, config
        self.meta, self.callbacks = meta or {}, list(callbacks)
        self.rank, self.world = pdist.world()
        if config.batch_size % self.world:
            raise ConfigError(f"the global batch size {config.batch_size} is split evenly over {self.world} processes: "
                              f"choose a multiple of {self.world}")
        self.folder = RunFolder(out_dir) if out_dir is not None else None
        self.device = resolve_device(config.device)
        self.scheme = get_scheme(scheme if scheme is not None else config.scheme, model)
        for obj in (model, guide, self.scheme):
            if isinstance(obj, torch.nn.Module):
                obj.to(self.device)
        for split in ("valid", "test"):
            if data.split(split).shape[0]:
                check_data(data.split(split), data.likelihood, what=f"{data.name} {split} split")
        labels = data.labels("train")
        self.labels = labels.to(self.device) if labels is not None else None
        self.valid = data.split("valid").to(self.device) if data.split("valid").shape[0] else None
        self.history: list[dict] = []
        self.best, self.bad_epochs, self.start_epoch, self.stopped_early = None, 0, 0, False

    # --- setup ------------------------------------------------------------------------------

    def _build(self, ckpt: dict | None) -> None:
        """Seed, probe, set the scheme up and make one optimizer per group (then load ``ckpt``)."""
        cfg = self.config
        seed_everything(cfg.seed)
        self.batch_gen = torch.Generator().manual_seed(cfg.seed + 1)
        probe = next(self.data.batches("train", min(cfg.batch_size, len(self.data)), self.batch_gen, device=self.device))[1]
        self.batch_gen.manual_seed(cfg.seed + 1)  # the probe batch must not shift the run's batches
        check_data(probe, self.data.likelihood, x_dim=self.data.x_dim, what=f"{self.data.name} training batch")
        if cfg.compile and not getattr(self.scheme, "compiles", False):
            raise ConfigError(f"compile=True compiles the bound scheme's loss; the {self.scheme.name!r} scheme "
                              "runs eagerly: leave compile off")
        self.scheme.setup(self.model, self.guide, probe, cfg)
        self.scheme.to(self.device)
        if ckpt is not None and ckpt.get("param_store"):
            # before the groups are built: set_state replaces the store's tensors
            pyro.get_param_store().set_state(ckpt["param_store"])
        self.groups = self.scheme.param_groups(self.model, self.guide, probe, cfg)
        self.optimizers = {name: g.optimizer() for name, g in self.groups.items()}
        self.monitor = self.scheme.monitor if self.valid is not None else None
        if self.world > 1:
            # one set of weights for all ranks (rank 0's), then each rank its own latent noise
            pdist.broadcast_state(self._modules().values())
            torch.manual_seed(cfg.seed + 104_729 * (self.rank + 1))
        if ckpt is not None:
            self._restore(ckpt)

    def _restore(self, ckpt: dict) -> None:
        states = upgrade_checkpoint(ckpt)
        try:
            for obj, key in ((self.model, "model_state"), (self.guide, "guide_state"), (self.scheme, "scheme_state")):
                if isinstance(obj, torch.nn.Module) and states.get(key) is not None:
                    obj.load_state_dict(states[key])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(states["optimizers"][name])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"the checkpoint does not match this model/guide/scheme: {e}") from e
        rng = ckpt["rng"]
        if self.world > 1 or "rng_ranks" in ckpt:
            ranks = ckpt.get("rng_ranks") or [rng]
            if len(ranks) != self.world:
                raise ConfigError(f"the run was trained on {len(ranks)} process(es): resume it on as many "
                                  f"(now {self.world}) so that every rank continues its own random stream")
            rng = ranks[self.rank]
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.batch_gen.set_state(rng["batches"].cpu())
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        self.history, self.start_epoch = list(ckpt["history"]), int(ckpt["epoch"])
        self.best, self.bad_epochs = ckpt.get("best_valid"), ckpt["bad_epochs"]
        self.stopped_early = bool(ckpt.get("stopped_early", False))

    # --- the loop ---------------------------------------------------------------------------

    def run(self, resume: bool | str = False, overwrite: bool = False) -> FitResult:
        ckpt = None
        if resume:
            if self.folder is None:
                raise ConfigError("resume needs the out_dir of the run to resume")
            ckpt = self.folder.checkpoint_to_resume("best" if resume == "best" else "last")
            check_resumable(ckpt, self.config, self.scheme)
        elif self.folder is not None and self.rank == 0:
            self.folder.claim(overwrite)
        pdist.barrier()  # no rank starts before rank 0 has made the folder this run's
        self._build(ckpt)
        if self.folder is not None and self.rank == 0:
            self.folder.write_metrics(self.history)  # on resume: drop epochs after the checkpoint
        done = self._nothing_left()
        if done:
            return self._result(0, done)
        trained = 0
        for epoch in range(self.start_epoch, self.config.epochs):
            metrics = self._epoch_guarded(epoch)
            trained += 1
            improved = self._track(metrics, epoch)
            self.history.append(metrics)
            state = self._state(epoch + 1)  # every rank: it gathers the ranks' random states
            if self.folder is not None and self.rank == 0:
                self.folder.save(state, best=improved)
                self.folder.append_metrics(metrics)
            pdist.barrier()  # checkpoint on disk before any rank could stop and resume from it
            for cb in self.callbacks if self.rank == 0 else ():
                cb(metrics)
            if self.stopped_early:
                break
        if self.stopped_early and self.folder is not None and self.folder.has("best.pt"):
            self._load_weights(load(self.folder.path / "best.pt", map_location=self.device))
        return self._result(trained, "")

    def _epoch_guarded(self, epoch: int) -> dict:
        """One epoch; on divergence the in-memory networks go back to where the epoch started."""
        snapshot = self._weights()
        try:
            return self._epoch(epoch)
        except TrainingDivergedError:
            self._load_weights(snapshot)
            raise

    def _epoch(self, epoch: int) -> dict:
        from tqdm.auto import tqdm

        cfg, n = self.config, len(self.data)
        steps = math.ceil(n / cfg.batch_size)
        ctx = StepContext(cfg, epoch, 0, steps, n, self.device, self.batch_gen, self.data)
        lrs = self._schedule(epoch)
        sums: dict[str, list[float]] = {}  # metric -> [weighted sum, total weight]
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or self.rank > 0,
                   leave=False, dynamic_ncols=True)
        t0, cpu0 = time.perf_counter(), time.process_time()
        # Training mode for the steps (dropout on), whatever mode the caller's networks came in:
        # a pair loaded for evaluation (runs.load returns it in eval mode) trains as it was built.
        for m in self._modules().values():
            m.train()
        # Validation costs a device sync per distribution; the data was checked up front instead.
        with pyro.validation_enabled(False):
            for step, (idx, x) in enumerate(self.data.batches("train", cfg.batch_size, self.batch_gen, device=self.device)):
                ctx.step = step
                y = self.labels[idx] if self.labels is not None else None
                x, y = pdist.shard(x, y)  # this rank's rows of the global batch (all of it on one process)
                for phase in self.scheme.step(self.model, self.guide, x, y, ctx):
                    self._apply(phase, sums, f"epoch {epoch + 1}, step {step + 1}")
                if step % 25 == 24 or step == steps - 1:
                    bar.set_postfix({k: f"{s / w:.4g}" for k, (s, w) in sums.items()}, refresh=False)
                bar.update(1)
            step_seconds = time.perf_counter() - t0
            ctx.step = steps
            for phase in self.scheme.epoch_phases(self.model, self.guide, ctx):
                self._apply(phase, sums, f"the per-epoch phases of epoch {epoch + 1}")
        bar.close()
        metrics: dict[str, Any] = {"epoch": epoch + 1, **{k: s / w for k, (s, w) in sums.items()}}
        metrics.update(lrs)
        metrics.update({"kl_weight": kl_weight(epoch + 1, cfg.kl_warmup_epochs), "time": step_seconds})
        valid: dict[str, float] = {}
        if self.rank == 0:  # the others take rank 0's figures (and its buffers) below
            # the deterministic network (dropout off): a model selected on one random thinned
            # network's validation error would be selected on noise
            with eval_mode(*self._modules().values()):
                metrics.update(self.scheme.epoch_metrics(self.model, self.guide, ctx))
                if self.valid is not None:
                    with pyro.validation_enabled(False):
                        valid = self.scheme.validate(self.model, self.guide, self.valid, ctx)
        if self.world > 1:
            pdist.broadcast_buffers(self._modules().values())
            metrics, valid = pdist.broadcast((metrics, valid))
        bad = [k for k, v in valid.items() if not math.isfinite(v)]
        if bad:
            raise self._diverged(f"the validation metric {bad[0]} became {valid[bad[0]]}", epoch)
        metrics.update(valid)
        if not self._weights_finite():
            raise self._diverged("a parameter became non-finite (with a finite loss)", epoch)
        # "time" is the minibatch steps alone; this adds the per-epoch phases and validation
        metrics["epoch_seconds"] = time.perf_counter() - t0
        # CPU seconds of this process (all its threads) for the whole epoch: unlike the wall-clock
        # figures above, not inflated when other jobs share the machine
        metrics["cpu_seconds"] = time.process_time() - cpu0
        return metrics

    def _apply(self, phase: Phase, sums: dict, where: str) -> None:
        """Check, zero, backward, clip, step: one phase."""
        logged = [phase.loss.detach(), phase.value if phase.value is not None else phase.loss.detach(),
                  *(t.detach() for t in phase.metrics.values())]
        if self.world > 1:  # one all-reduce: every rank checks, and logs, the mean over ranks
            logged = list(pdist.mean_over_ranks(torch.stack([t.reshape(()).double() for t in logged])))
        value = float(logged[0])
        if not math.isfinite(value):
            raise self._diverged(f"the loss of phase {phase.name!r} became {value} at {where}", None)
        if phase.group not in self.optimizers:
            raise ConfigError(f"phase {phase.name!r} steps group {phase.group!r}, which the scheme did not "
                              f"declare; its groups: {', '.join(self.optimizers)}")
        group, opt = self.groups[phase.group], self.optimizers[phase.group]
        opt.zero_grad(set_to_none=True)  # a generator's backward also filled these
        phase.loss.backward()
        pdist.average_gradients(group.params)
        if group.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(group.params, group.grad_clip)
            if not torch.isfinite(norm):
                raise self._diverged(f"the gradient norm of phase {phase.name!r} became {float(norm)} at {where}", None)
        opt.step()
        for name, v in ((phase.name, float(logged[1])), *((k, float(t)) for k, t in zip(phase.metrics, logged[2:]))):
            s = sums.setdefault(name, [0.0, 0.0])
            s[0] += v * phase.weight
            s[1] += phase.weight

    def _schedule(self, epoch: int) -> dict[str, float]:
        """Set every group's learning rate for ``epoch``; the metrics name them lr, <group>_lr."""
        cfg, out = self.config, {}
        for i, (name, group) in enumerate(self.groups.items()):
            lr = group.lr * lr_factor(group.lr_schedule, epoch, cfg.epochs, scale=cfg.schedule_scale, gamma=cfg.lr_gamma)
            for g in self.optimizers[name].param_groups:
                g["lr"] = lr
            out["lr" if i == 0 else f"{name}_lr"] = lr
        return out

    def _track(self, metrics: dict, epoch: int) -> bool:
        """Update the best value and patience; True when this epoch is the best so far."""
        key = self.monitor or next(k for k in metrics if k not in ("epoch",))
        sign = 1.0 if (self.monitor and self.scheme.mode == "max") else -1.0
        value = metrics[key]
        improved = self.best is None or sign * value > sign * self.best
        self.best, self.bad_epochs = (value, 0) if improved else (self.best, self.bad_epochs + 1)
        if epoch + 1 < self.config.kl_warmup_epochs:
            # During KL warm-up the beta=1 validation bound can fall while training is fine (the
            # KL weight is still rising): patience only counts epochs after the warm-up.
            self.bad_epochs = 0
        patience = self.config.early_stopping_patience
        self.stopped_early = patience is not None and self.bad_epochs >= patience
        return improved

    def _nothing_left(self) -> str:
        if self.stopped_early:
            return (f"the run stopped early at epoch {self.start_epoch} (no better {self.monitor or 'metric'} for "
                    f"{self.bad_epochs} epochs): nothing to train; best.pt holds its best epoch")
        if self.start_epoch >= self.config.epochs:
            return (f"the run is already at epoch {self.start_epoch} of {self.config.epochs}: nothing to train; "
                    "ask for more epochs to continue it")
        return ""

    def _result(self, trained: int, message: str) -> FitResult:
        out = self.folder.path if self.folder is not None else None
        return FitResult(self.history, self.best, self.stopped_early, out, trained, message)

    def _diverged(self, what: str, epoch: int | None) -> TrainingDivergedError:
        done = len(self.history)
        kept = (f"the last good checkpoint {self.folder.path / 'last.pt'} (epoch {done}) is kept"
                if self.folder is not None and done else "no checkpoint was written yet")
        return TrainingDivergedError(
            f"{what}; {kept}; no optimizer stepped on it, and the networks in memory are as they were after "
            f"epoch {done}. "
            "Lower the learning rate, clip gradients (grad_clip / --grad-clip), add KL warm-up, or check "
            "the data for extreme values"
        )

    # --- state ------------------------------------------------------------------------------

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {k: m for k, m in (("model_state", self.model), ("guide_state", self.guide),
                                  ("scheme_state", self.scheme)) if isinstance(m, torch.nn.Module)}

    def _weights(self) -> dict:
        return copy.deepcopy({k: m.state_dict() for k, m in self._modules().items()})

    def _load_weights(self, states: dict) -> None:
        for k, m in self._modules().items():
            if states.get(k) is not None:
                m.load_state_dict(states[k])

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for g in self.groups.values() for p in g.params)

    def _state(self, epoch: int) -> dict:
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
               "batches": self.batch_gen.get_state(), "python": random.getstate(), "numpy": np.random.get_state()}
        rng_ranks = pdist.gather(rng) if self.world > 1 else None
        return {
            "format": 2,
            "epoch": epoch,
            **{k: m.state_dict() for k, m in self._modules().items()},
            "param_store": pyro.get_param_store().get_state(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "rng": rng,
            **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
            "world_size": self.world,
            "history": self.history,
            "best_valid": self.best,
            "monitor": self.monitor,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "train_config": dataclasses.asdict(self.config),
            "scheme": self.scheme.describe(),
            "meta": self.meta,
        }


# Per-epoch metrics that measure time, not training: they differ between otherwise identical runs.
TIMING_KEYS = ("time", "epoch_seconds", "cpu_seconds")

# Settings a resumed run may change; any other difference from the checkpoint is an error.
RESUMABLE_CHANGES = ("epochs", "early_stopping_patience", "progress", "device", "scheme")


def check_resumable(ckpt: dict, config: TrainConfig, scheme: Scheme) -> None:
    """Refuse to resume with settings other than the checkpoint's (epochs may grow)."""
    old = ckpt.get("train_config", {})
    now = dataclasses.asdict(config)
    diff = {k: (_plain(old[k]), _plain(now[k])) for k in now if k in old and k not in RESUMABLE_CHANGES and _plain(old[k]) != _plain(now[k])}
    if diff:
        listed = ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in diff.items())
        raise ConfigError(f"cannot resume with other settings than the run was trained with ({listed}); "
                          "drop those options (resuming takes them from the checkpoint) or train into another folder")
    recorded = ckpt.get("scheme")
    if recorded and recorded.get("name") != scheme.name:
        raise ConfigError(f"the run was trained with the {recorded.get('name')!r} scheme, not {scheme.name!r}")


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def upgrade_checkpoint(ckpt: dict) -> dict:
    """The per-network and per-optimizer states of ``ckpt``, from either checkpoint format.

    Format 1 (one Adam, ``"optimizer"``) held the IOP's T optimizer inside the model's state as
    ``log_ratio._extra_state``; format 2 has one optimizer per scheme group (``"optimizers"``)."""
    if ckpt.get("format", 1) >= 2:
        return ckpt
    model_state = dict(ckpt["model_state"] or {})
    optimizers = {"pair": ckpt["optimizer"]}
    extra = model_state.pop("log_ratio._extra_state", None)
    if extra is not None:
        optimizers["ratio"] = extra["optimizer"]
    return {**ckpt, "model_state": model_state, "optimizers": optimizers}
