"""Whole training epochs: a hand-written PyTorch loop, pythae's ``BaseTrainer`` and ``ppvae.fit``.

``train_step.py`` times one optimizer step; this script times what a user waits for: whole epochs
of training, trainer overheads included (batching, data checks, bookkeeping, the trainer's setup).
Everything runs in one process with one torch thread, on the CPU, on fixed-binarized MNIST
(``ppvae.load_dataset("binarized-mnist", root)``: 50,000 training images x 784), batch 100, the
IWAE paper's one-layer VAE (784-200-200-50, tanh, Bernoulli decoder:
``ppvae.build("vae", 784, {"stochastic_layers": 1})``), the ELBO with the analytic Gaussian KL
and Adam (lr 1e-3, betas (0.9, 0.999), eps 1e-8). The three implementations:

(a) torch   a hand-written loop: the data as one tensor, ``torch.randperm`` per epoch, ``x[idx]``
            batches, ``train_step.TorchVAE``'s closed-form loss (minus the ELBO summed over the
            batch times N/B), zero_grad / backward / step and ``loss.item()`` for the epoch mean;
(a') the same loop with ``torch.optim.Adam(..., fused=True)``: ppvae's trainer builds fused Adam
            (``ParamGroup.optimizer``), about 2 ms per step cheaper here than torch's default
            for-loop Adam, so (c) is compared with both: (a) is what a user writes by default,
            (a') is the hand-written loop at its best;
(b) pythae  ``pythae.trainers.BaseTrainer`` on ``pythae.models.VAE`` (reconstruction_loss "bce")
            with the same encoder and decoder MLPs, wrapped as pythae ``BaseEncoder`` /
            ``BaseDecoder``: the encoder returns ``log_covariance = 2 log softplus(raw)`` so that
            pythae's ``exp(0.5 log_var)`` is ppvae's scale, the decoder returns ``sigmoid(logits)``
            for pythae's binary cross-entropy. Its defaults otherwise: a ``DataLoader`` over a
            ``BaseDataset``, the progress bar on stderr, a copy of the best model each epoch and
            the final model saved (into a temporary folder);
(c) ppvae   ``ppvae.fit(model, guide, x, objective="elbo-analytic", batch_size=100, lr=1e-3,
            epochs=E, progress=False, device="cpu")`` on the training images as a tensor, so the
            call includes ``from_array``'s data checks.

All three start from the same initial weights (the ppvae pair built with seed 0; the other two
load its state dicts) and, before anything is timed, are checked to give the same loss on the same
batch and the same random numbers (pythae's batch-mean loss times N); the script exits with an
error if they do not. After an untimed warm-up (one epoch of each on 200 images), each
repetition (``--repeats``, default 3) runs one training call of ``--epochs`` epochs per
implementation, in a rotating order, on fresh networks and optimizers.

Reported, per implementation, on two clocks (``cpu``: this process's CPU time, which other jobs on
a shared machine barely disturb with one torch thread; ``wall``: elapsed time):

- **epoch s**: the median epoch. An epoch is timed from outside, from the end of the previous
  epoch to the end of this one (ppvae's ``callbacks``, pythae's ``on_epoch_end``, the loop's own
  clock). The first epoch of a call also holds the trainer's setup and, for ppvae, whose epoch
  start cannot be seen from outside, the data checks; so with ``--epochs`` >= 2 the median is
  over epochs 2..E of every repetition, and with ``--epochs 1`` over the first epochs.
- **call s / epoch**: the whole training call (for pythae: wrapping the data, building the
  trainer, ``train()``) divided by the number of epochs: what a user waits per epoch.
- **ratio to (a)**: the median over repetitions of the per-repetition ratio to the hand-written
  loop [smallest-largest].

For ppvae the per-epoch timings of its history are printed as well (``time``: the minibatch steps
alone, wall clock; ``cpu_seconds``, where ppvae records it: the whole epoch, CPU time). The table
also gives the last epoch's training loss of each implementation (the mean negative ELBO per data
point over the epoch; pythae's is its mean over batches) to show they did the same work. Nothing
here asserts a time.

pythae is not a ppvae dependency. Install it into a separate virtualenv, next to an editable
ppvae, and run the script with that venv's Python (without pythae the script prints
"pythae not installed: skipped"; ``--skip-pythae`` skips it in any case)::

    python3 -m venv /tmp/pythae-venv
    /tmp/pythae-venv/bin/pip install -c constraints.txt pythae      # pythae 0.1.2 needs torch>=1.10.1
    /tmp/pythae-venv/bin/pip install -c constraints.txt -e .
    /tmp/pythae-venv/bin/python benchmarks/epoch.py

Run from the repository root, in the project's venv (or the pythae one)::

    python benchmarks/epoch.py                                  # 3 epochs x 3 repetitions, 3-8 min
    python benchmarks/epoch.py --limit 500 --epochs 1 --skip-pythae   # seconds (tests/test_benchmark_epoch.py)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyro
import torch
from torch.nn import functional as F

import ppvae
from ppvae.objectives import get_objective

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import (  # noqa: E402  (the sibling benchmark: the torch VAE, machine line, ratios)
    BATCH,
    BETAS,
    EPS,
    LR,
    TorchVAE,
    _mlp,
    load_average,
    machine,
    paired_ratio,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "datasets"  # ../shared/datasets from the repository root
OPTIONS = {"stochastic_layers": 1}  # the IWAE paper's 784-200-200-50 tanh VAE
OBJECTIVE = "elbo-analytic"
SEED = 0
NAMES = {"torch": "(a) hand-written torch", "torch-fused": "(a') (a), fused Adam", "pythae": "(b) pythae BaseTrainer",
         "ppvae": "(c) ppvae.fit"}
CLOCKS = ("cpu", "wall")
# ppvae's own per-epoch timings in its history, and the clock of the hand-written loop to hold them
# against: "time" is the minibatch steps alone (wall); "cpu_seconds" (newer ppvae) the whole epoch
HISTORY_TIMINGS = {"time": "wall", "cpu_seconds": "cpu"}


# --- clocks ---------------------------------------------------------------------------------------


def now() -> dict[str, float]:
    return {"cpu": time.process_time(), "wall": time.perf_counter()}


@dataclass
class Run:
    """One training call: its start and end, the end of each epoch, and each epoch's mean loss."""

    start: dict[str, float] = field(default_factory=now)
    ends: list[dict[str, float]] = field(default_factory=list)
    end: dict[str, float] | None = None
    losses: list[float] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)  # ppvae's own per-epoch timings

    def epoch_end(self, loss: float) -> None:
        self.ends.append(now())
        self.losses.append(float(loss))

    def finish(self) -> None:
        self.end = now()

    def epochs(self, clock: str) -> list[float]:
        """Seconds of each epoch, from the end of the previous one (the first: from the call's start)."""
        marks = [self.start[clock]] + [e[clock] for e in self.ends]
        return [b - a for a, b in zip(marks, marks[1:])]

    def steady(self, clock: str) -> list[float]:
        """The epochs the median is taken over: 2..E, or the first when there is only one."""
        times = self.epochs(clock)
        return times[1:] if len(times) > 1 else times

    def per_epoch_call(self, clock: str) -> float:
        return (self.end[clock] - self.start[clock]) / len(self.ends)


# --- the three implementations --------------------------------------------------------------------


def build_pair():
    """The ppvae pair with the benchmark's initial weights (every call gives the same ones)."""
    model, guide, _ = ppvae.build("vae", 784, OPTIONS, seed=SEED)
    return model, guide


def run_torch(x: torch.Tensor, epochs: int, fused: bool | None = None) -> Run:
    model, guide = build_pair()
    vae = TorchVAE.like(model, guide)
    run = Run()
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    opt = torch.optim.Adam(vae.parameters(), lr=LR, betas=BETAS, eps=EPS, fused=fused)
    n = x.shape[0]
    for _ in range(epochs):
        total = 0.0
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, BATCH):
            xb = x[order[start : start + BATCH]]
            loss = vae.loss(xb, OBJECTIVE, 1, n)  # minus the ELBO summed over the batch, times N/B
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0] / n
        run.epoch_end(total / n)
    run.finish()
    return run


def run_torch_fused(x: torch.Tensor, epochs: int) -> Run:
    return run_torch(x, epochs, fused=True)


def run_ppvae(x: torch.Tensor, epochs: int) -> Run:
    model, guide = build_pair()
    run = Run()
    result = ppvae.fit(model, guide, x, objective=OBJECTIVE, batch_size=BATCH, lr=LR, epochs=epochs,
                       progress=False, device="cpu", callbacks=[lambda m: run.epoch_end(m["train_loss"])])
    run.finish()
    for key in HISTORY_TIMINGS:
        if all(key in h for h in result.history):
            run.history[key] = [float(h[key]) for h in result.history]
    return run


def import_pythae():
    """The pythae classes this script uses, or None when pythae is not installed."""
    try:
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
        from pythae.trainers.training_callbacks import TrainingCallback
        from pythae.data.datasets import BaseDataset
    except ImportError:
        return None
    # pythae's trainer logs its settings and every epoch's losses at INFO level to the console
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)

    class Encoder(BaseEncoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            loc, raw = self.net(x).chunk(2, dim=-1)
            return ModelOutput(embedding=loc, log_covariance=2 * torch.log(F.softplus(raw)))

    class Decoder(BaseDecoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    class EpochClock(TrainingCallback):
        def __init__(self, run: Run):
            self.run = run

        def on_epoch_end(self, training_config, **kwargs):
            self.run.ends.append(now())

        def on_log(self, training_config, logs, **kwargs):
            self.run.losses.append(float(logs["train_epoch_loss"]))

    def make_model():
        model, guide = build_pair()
        enc, dec = _mlp([784, 200, 200, 100]), _mlp([50, 200, 200, 784])
        enc.load_state_dict(guide.layers[0].net.state_dict())
        dec.load_state_dict(model.decoder.state_dict())
        config = VAEConfig(input_dim=(784,), latent_dim=50, reconstruction_loss="bce")
        return VAE(config, encoder=Encoder(enc), decoder=Decoder(dec))

    def run_pythae(x: torch.Tensor, epochs: int) -> Run:
        vae = make_model()
        with tempfile.TemporaryDirectory(prefix="pythae-bench-") as out:
            run = Run()
            config = BaseTrainerConfig(
                output_dir=out, num_epochs=epochs, learning_rate=LR, per_device_train_batch_size=BATCH,
                per_device_eval_batch_size=BATCH, optimizer_cls="Adam", optimizer_params={"betas": BETAS, "eps": EPS},
                no_cuda=True, seed=SEED,
            )
            trainer = BaseTrainer(vae, BaseDataset(x, torch.zeros(x.shape[0])), training_config=config,
                                  callbacks=[EpochClock(run)])
            trainer.train()
            run.finish()
        return run

    return make_model, run_pythae


# --- the check that the implementations compute the same loss -------------------------------------


def check_same_loss(x0: torch.Tensor, num_data: int, pythae_model: Callable | None) -> float:
    """Relative difference of ppvae's (and pythae's) loss from the hand-written one on one batch."""
    model, guide = build_pair()
    vae = TorchVAE.like(model, guide)
    objective = get_objective(OBJECTIVE, 1)
    values = {}
    with torch.no_grad(), pyro.validation_enabled(False):
        objective.loss(model, guide, x0, num_data=num_data)  # fills ppvae's per-pair cache first
        torch.manual_seed(1)
        ref = float(vae.loss(x0, OBJECTIVE, 1, num_data))
        torch.manual_seed(1)
        values["ppvae"] = float(objective.loss(model, guide, x0, num_data=num_data))
        if pythae_model is not None:
            pm = pythae_model()
            torch.manual_seed(1)
            values["pythae"] = float(pm({"data": x0}).loss) * num_data  # pythae: the batch mean
    for who, value in values.items():
        if not math.isclose(value, ref, rel_tol=1e-4):
            raise SystemExit(f"{who} loss {value} differs from the hand-written torch loss {ref}")
    return max(abs(v - ref) / abs(ref) for v in values.values())


# --- the benchmark --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="epochs per training call (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="training calls per implementation, in rotating order (default 3)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images (quick runs)")
    p.add_argument("--skip-pythae", action="store_true", help="leave pythae out even when it is installed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="where BinarizedMNIST/ lives (default ../shared/datasets)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        sys.exit("--epochs and --repeats must be at least 1")
    torch.set_num_threads(args.threads)

    try:
        ds = ppvae.load_dataset("binarized-mnist", args.data_root, limit=args.limit)
    except ppvae.PPVAEError as e:
        sys.exit(f"binarized MNIST not found under {args.data_root}: {e}")
    x = ds.split("train").contiguous()
    n = x.shape[0]

    runners: dict[str, Callable[[torch.Tensor, int], Run]] = {"torch": run_torch, "torch-fused": run_torch_fused}
    pythae_model = None
    if args.skip_pythae:
        pythae_note = "pythae: skipped (--skip-pythae)"
    else:
        found = import_pythae()
        if found is None:
            pythae_note = "pythae not installed: skipped"
        else:
            from importlib.metadata import version

            pythae_model, runners["pythae"] = found
            pythae_note = f"pythae {version('pythae')}"
    runners["ppvae"] = run_ppvae

    try:
        root = os.path.relpath(args.data_root, REPO)
    except ValueError:  # pragma: no cover - another drive on Windows
        root = str(args.data_root)
    print("ppvae whole-epoch benchmark: VAE 784-200-200-50 tanh, Bernoulli decoder, elbo-analytic, batch 100, Adam lr 1e-3")
    print(f"date {datetime.date.today()}, device cpu, data: binarized-mnist from {root} (N={n} x {x.shape[1]})")
    print(f"machine: {machine(torch.device('cpu'))}, platform.processor() {platform.processor()!r}")
    print(f"{pythae_note}; {load_average()} at start")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    agreement = check_same_loss(x[:BATCH], n, pythae_model)
    print(f"same loss on the same batch and random numbers: largest relative difference {agreement:.1e}")
    print(f"{args.repeats} repetitions x {args.epochs} epochs per implementation, rotating order")
    print()

    names = list(runners)
    for name in names:  # untimed warm-up: lazy imports, first-call costs of torch ops and the allocator
        runners[name](x[: 2 * BATCH], 1)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            gc.collect()
            run = runners[name](x, args.epochs)
            runs[name].append(run)
            print(f"  repetition {r + 1} {name:<6} epochs wall s: {' '.join(f'{t:.2f}' for t in run.epochs('wall'))}; "
                  f"cpu s: {' '.join(f'{t:.2f}' for t in run.epochs('cpu'))}; call {run.end['wall'] - run.start['wall']:.2f} s wall; "
                  f"{load_average()}", flush=True)
    print()
    print(table(runs, args.epochs))
    for clock in CLOCKS:  # against the hand-written loop at its best (fused Adam, as ppvae's trainer uses)
        q = paired_ratio([statistics.median(run.steady(clock)) for run in runs["ppvae"]],
                         [statistics.median(run.steady(clock)) for run in runs["torch-fused"]])
        print(f"(c) / (a') epoch s, {clock}: {q[0]:.3f} [{q[1]:.2f}-{q[2]:.2f}]")
    print()
    for key, clock in HISTORY_TIMINGS.items():
        hist = [t for run in runs["ppvae"] for t in run.history.get(key, [])]
        if not hist:
            continue
        torch_all = statistics.median(t for run in runs["torch"] for t in run.epochs(clock))
        what = "the minibatch steps alone, wall" if key == "time" else "the whole epoch, CPU"
        print(f"ppvae's own per-epoch {key!r} metric ({what}): median {statistics.median(hist):.2f} s over {len(hist)} "
              f"epochs ({' '.join(f'{t:.2f}' for t in hist)}); / (a)'s median epoch ({clock}, all epochs): "
              f"{statistics.median(hist) / torch_all:.3f}")
    print("epoch s: median epoch, each timed from the end of the previous one (the first from the start of the")
    print("call, so it holds the setup and ppvae's data checks): over epochs 2..E when E >= 2. call s / epoch:")
    print("the whole training call over E. ratio: median [smallest-largest] over repetitions of the ratio to (a)")
    print("in the same repetition. cpu: this process's CPU time (one torch thread); wall: elapsed time.")
    print(f"{load_average()} at end")


def table(runs: dict[str, list[Run]], epochs: int) -> str:
    header = (f"{'implementation':<24} {'clock':<5} {'epoch s':>8} {'ratio to (a)':>20} {'call s / epoch':>15} "
              f"{'ratio to (a)':>20} {'train loss':>10}")
    lines = [header, "-" * len(header)]
    fmt = lambda q: f"{q[0]:.3f} [{q[1]:.2f}-{q[2]:.2f}]"  # noqa: E731
    base = runs["torch"]
    for name, rs in runs.items():
        for i, clock in enumerate(CLOCKS):
            epoch = statistics.median(t for run in rs for t in run.steady(clock))
            call = statistics.median(run.per_epoch_call(clock) for run in rs)
            ratio_epoch = paired_ratio([statistics.median(run.steady(clock)) for run in rs],
                                       [statistics.median(run.steady(clock)) for run in base])
            ratio_call = paired_ratio([run.per_epoch_call(clock) for run in rs], [run.per_epoch_call(clock) for run in base])
            label = NAMES[name] if i == 0 else ""
            loss = f"{statistics.median(run.losses[-1] for run in rs):.2f}" if i == 0 else ""
            lines.append(f"{label:<24} {clock:<5} {epoch:>8.2f} {fmt(ratio_epoch):>20} {call:>15.2f} "
                         f"{fmt(ratio_call):>20} {loss:>10}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
