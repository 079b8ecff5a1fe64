"""Training a model/guide pair: ``ppvae.fit``.

A plain loop over minibatches: the objective's loss (N / B times the minibatch bound), one
``torch.optim.Adam`` over the parameters of model and guide, and per-epoch bookkeeping (validation
bound, metrics file, atomic checkpoint, early stopping). Everything random flows from two
generators saved in each checkpoint (torch's global one for the latents, one for batching and
dynamic binarization), so a run resumed from its checkpoint ends bit-identical to an uninterrupted
run with the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyro
import torch
from pyro import poutine

from ppvae.checkpoint import load, save_atomic
from ppvae.data import Dataset, check_data, from_array
from ppvae.errors import CheckpointError, ConfigError, TrainingDivergedError
from ppvae.objectives import get_objective
from ppvae.schedules import LR_SCHEDULES, kl_weight, lr_factor
from ppvae.traces import raise_if_shape_error


@dataclass
class TrainConfig:
    objective: str = "elbo-analytic"  # "elbo" (MC KL), "elbo-analytic" (analytic KL) or "iwae"
    num_particles: int = 1  # L samples per datapoint for the ELBOs, k for iwae
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
    grad_clip: float | None = None  # clip the global gradient norm to this value
    early_stopping_patience: int | None = None  # stop after this many epochs without a better valid bound
    valid_particles: int | None = None  # particles for the validation bound (default: num_particles)
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when present) | "cpu" | "cuda" | "cuda:N"
    progress: bool = True

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
        for name in ("epochs", "batch_size", "num_particles"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        self.adam_betas = tuple(self.adam_betas)
        get_objective(self.objective, self.num_particles)  # validates the name early


@dataclass
class FitResult:
    history: list[dict]  # one dict of metrics per epoch
    best_valid: float | None  # best mean validation bound per datapoint (nats)
    stopped_early: bool
    out_dir: Path | None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device auto or cpu")
    return device


def parameters_of(model: Callable, guide: Callable, x: torch.Tensor) -> list[torch.nn.Parameter]:
    """Every trainable tensor of the pair, each once: the modules' parameters, plus any
    ``pyro.param`` the programs create (found with one param-only trace)."""
    params: dict[int, torch.Tensor] = {}
    excluded = {id(p) for obj in (model, guide) for m in _excluded_modules(obj) for p in m.parameters()}
    for obj in (model, guide):
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                if id(p) not in excluded:
                    params.setdefault(id(p), p)
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
        try:
            guide_tr = poutine.trace(guide, param_only=True).get_trace(x)
            model_tr = poutine.trace(poutine.replay(model, guide_tr), param_only=True).get_trace(x)
        except ValueError as e:
            raise_if_shape_error(e)  # a missing .to_event: say so, not Pyro's bare shape mismatch
            raise
    for tr in (guide_tr, model_tr):
        for site in tr.nodes.values():
            v = site["value"]
            v = v.unconstrained() if hasattr(v, "unconstrained") else v
            if v.requires_grad and id(v) not in excluded:
                params.setdefault(id(v), v)
    if not params:
        raise ConfigError("the model/guide pair has no trainable parameters")
    return list(params.values())


def _excluded_modules(obj) -> Sequence[torch.nn.Module]:
    """Modules a family trains in its own phase, kept out of the ELBO's optimizer (e.g. the
    density-ratio network T of the implicit-optimal-prior VAE, DESIGN fact 8)."""
    hook = getattr(obj, "elbo_excluded_modules", None)
    return tuple(hook()) if callable(hook) else ()


def _state(obj) -> dict | None:
    return obj.state_dict() if isinstance(obj, torch.nn.Module) else None


def fit(
    model: Callable,
    guide: Callable,
    data: Dataset | torch.Tensor | np.ndarray,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    callbacks: Sequence[Callable[[dict], None]] = (),
    **overrides,
) -> FitResult:
    """Train ``model``/``guide`` on ``data``; return the per-epoch history.

    ``data`` is a :class:`ppvae.data.Dataset` or an (N, D) array (trained on whole, no validation).
    ``config`` fields can also be given as keyword overrides (``fit(m, g, x, epochs=5)``).
    With ``out_dir``, each epoch appends to ``metrics.jsonl`` and atomically rewrites
    ``last.pt`` (and ``best.pt`` when the validation bound improves); ``resume=True`` continues
    from ``out_dir/last.pt``. ``meta`` is stored in the checkpoints (the CLI records the model family,
    its config and the dataset there). Each callback gets the epoch's metrics dict.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    if not isinstance(data, Dataset):
        data = from_array(data, valid_fraction=0.0, test_fraction=0.0)
    device = resolve_device(config.device)
    objective = get_objective(config.objective, config.num_particles)
    valid_objective = get_objective(config.objective, config.valid_particles or config.num_particles)
    for obj in (model, guide):
        if isinstance(obj, torch.nn.Module):
            obj.to(device)
    for split in ("valid", "test"):
        if data.split(split).shape[0]:
            check_data(data.split(split), data.likelihood, what=f"{data.name} {split} split")

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    batch_gen = torch.Generator().manual_seed(config.seed + 1)
    first = next(data.batches("train", min(config.batch_size, len(data)), batch_gen, device=device))[1]
    batch_gen.manual_seed(config.seed + 1)  # the probe batch must not shift the run's batches
    check_data(first, data.likelihood, x_dim=data.x_dim, what=f"{data.name} training batch")
    params = parameters_of(model, guide, first)
    optimizer = torch.optim.Adam(
        params, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps, weight_decay=config.weight_decay
    )

    out = Path(out_dir) if out_dir is not None else None
    history: list[dict] = []
    best, bad_epochs, start_epoch = -math.inf, 0, 0
    if resume:
        if out is None:
            raise ConfigError("resume=True needs the out_dir of the run to resume")
        ckpt = load(out / "last.pt", map_location=device)
        _restore(ckpt, model, guide, optimizer, batch_gen)
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        best, bad_epochs = ckpt["best_valid"], ckpt["bad_epochs"]
        best = -math.inf if best is None else best
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _write_metrics(out / "metrics.jsonl", history)  # on resume: drop epochs after the checkpoint

    n_train = len(data)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        lr = config.lr * lr_factor(config.lr_schedule, epoch, config.epochs, scale=config.schedule_scale, gamma=config.lr_gamma)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        total = _train_epoch(model, guide, data, config, objective, optimizer, params, batch_gen, device, epoch, steps_per_epoch, n_train, out)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": total / n_train,  # minus the training bound, nats per datapoint
            "lr": lr,
            "kl_weight": kl_weight(epoch + 1, config.kl_warmup_epochs),
            "time": time.perf_counter() - t0,
        }
        # A family's own training phase after each ELBO epoch (e.g. the density-ratio network of
        # the implicit-optimal-prior VAE): model.after_epoch(guide, data, ...) -> extra metrics.
        # Its optimizer state belongs in the model's state_dict (nn.Module.get_extra_state).
        phase = getattr(model, "after_epoch", None)
        if callable(phase):
            metrics.update(phase(guide, data, epoch=epoch, device=device, generator=batch_gen) or {})
        if data.split("valid").shape[0]:
            metrics[f"valid_{objective.name}"] = _mean_bound(model, guide, data.split("valid").to(device), valid_objective)
        # "time" is the optimizer steps alone; this adds the family's phase and the validation bound
        metrics["epoch_seconds"] = time.perf_counter() - t0
        score = metrics.get(f"valid_{objective.name}", -metrics["train_loss"])
        improved = score > best
        best, bad_epochs = (score, 0) if improved else (best, bad_epochs + 1)
        if epoch + 1 < config.kl_warmup_epochs:
            # During KL warm-up the beta=1 validation bound can fall while training is fine (the
            # KL weight is still rising): patience only counts epochs after the warm-up.
            bad_epochs = 0
        history.append(metrics)
        state = {
            "format": 1,
            "epoch": epoch + 1,
            "model_state": _state(model),
            "guide_state": _state(guide),
            "param_store": pyro.get_param_store().get_state(),
            "optimizer": optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "batches": batch_gen.get_state(), "python": random.getstate(), "numpy": np.random.get_state()},
            "history": history,
            "best_valid": best,
            "bad_epochs": bad_epochs,
            "train_config": dataclasses.asdict(config),
            "meta": meta or {},
        }
        if out is not None:
            save_atomic(state, out / "last.pt")
            if improved:
                save_atomic(state, out / "best.pt")
            _append_metrics(out / "metrics.jsonl", metrics)
        for cb in callbacks:
            cb(metrics)
        if config.early_stopping_patience is not None and bad_epochs >= config.early_stopping_patience:
            stopped_early = True
            break
    if stopped_early and out is not None and (out / "best.pt").exists():
        _restore(load(out / "best.pt", map_location=device), model, guide, None, None)
    return FitResult(history, None if best == -math.inf else best, stopped_early, out)


def _train_epoch(model, guide, data, config, objective, optimizer, params, batch_gen, device, epoch, steps, n_train, out):
    from tqdm.auto import tqdm

    cuda = device.type == "cuda"
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress, leave=False, dynamic_ncols=True)
    total = torch.zeros((), device=device)
    # Validation costs a device sync per distribution; data was checked up front instead.
    with pyro.validation_enabled(False):
        for step, (_, x) in enumerate(data.batches("train", config.batch_size, batch_gen, device=device)):
            beta = kl_weight(epoch + step / steps, config.kl_warmup_epochs)
            loss = objective.loss(model, guide, x, num_data=n_train, beta=beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            # the loss is N/B times the minibatch sum: B/N of it is this batch's share of the epoch sum
            total += loss.detach() * (x.shape[0] / n_train)
            # On CUDA every .item() is a sync: look at the loss every 50 steps and at the end.
            if not cuda or step % 50 == 49 or step == steps - 1:
                value = loss.detach().item()
                if not math.isfinite(value):
                    bar.close()
                    kept = f"the last good checkpoint {out / 'last.pt'} (epoch {epoch}) is kept" if out and epoch else "no checkpoint was written yet"
                    raise TrainingDivergedError(
                        f"the loss became {value} at epoch {epoch + 1}, step {step + 1}; {kept}. "
                        "Lower the learning rate, clip gradients (grad_clip / --grad-clip), add KL "
                        "warm-up, or check the data for extreme values"
                    )
                bar.set_postfix(loss=f"{value / n_train:.3f}", refresh=False)
            bar.update(1)
    bar.close()
    return float(total)


def _mean_bound(model, guide, x, objective, batch_size: int = 500) -> float:
    with torch.no_grad(), pyro.validation_enabled(False):
        total = sum(float(objective.bound(model, guide, x[i : i + batch_size]).sum()) for i in range(0, x.shape[0], batch_size))
    return total / x.shape[0]


def _restore(ckpt, model, guide, optimizer, batch_gen) -> None:
    try:
        for obj, key in ((model, "model_state"), (guide, "guide_state")):
            if isinstance(obj, torch.nn.Module):
                obj.load_state_dict(ckpt[key])
        if ckpt.get("param_store"):
            pyro.get_param_store().set_state(ckpt["param_store"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"the checkpoint does not match this model/guide: {e}") from e
    if batch_gen is not None:
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        batch_gen.set_state(rng["batches"].cpu())
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])


def _write_metrics(path: Path, history: list[dict]) -> None:
    path.write_text("".join(json.dumps(h) + "\n" for h in history))


def _append_metrics(path: Path, metrics: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(metrics) + "\n")
