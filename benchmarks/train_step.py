"""Time of one training step: ppvae's VAE pair against the same VAE written in plain PyTorch.

The model is the IWAE paper's one-layer MLP (784-200-200-50, tanh, Bernoulli decoder:
``ppvae.build("vae", 784)``), trained with batch 100 and Adam. One step is::

    loss = objective.loss(model, guide, x, num_data=N)     # ppvae, as ppvae/train.py::_train_epoch
    optimizer.zero_grad(set_to_none=True); loss.backward(); optimizer.step()

under ``pyro.validation_enabled(False)``, against a hand-written PyTorch VAE with the same layers,
the same initial weights, the same estimator and the same Adam settings:

    elbo           Monte Carlo KL, 1 sample          (Kingma & Welling 2014, estimator A)
    elbo-analytic  analytic Gaussian KL, 1 sample    (estimator B)
    iwae k=5/50    importance-weighted bound         (Burda et al. 2016)

For context a third column times Pyro's own ``Trace_ELBO`` / ``TraceMeanField_ELBO``
``.differentiable_loss`` on the same pair (none for iwae: ``RenyiELBO`` has no
``differentiable_loss``, and it is a tempered bound under scaling, DESIGN fact 2). Before timing, every implementation's loss is
checked to equal the hand-written one on the same random numbers, so the columns compute the same
thing.

The implementations run interleaved in short blocks of steps, many rounds, in a rotating order,
after a warm-up: on a shared machine load changes from second to second, and adjacent blocks see
the same load. Reported: the median ms/step of each, and the median over rounds of the per-round
ratio ppvae / torch (its 25-75% range in brackets). Nothing here asserts a time.

Run from the repository root::

    python benchmarks/train_step.py                 # CPU, 1 thread
    python benchmarks/train_step.py --device cuda
    python benchmarks/train_step.py --quick         # a few seconds, for the tests

References:
  Kingma & Welling (2014), Auto-Encoding Variational Bayes.
  Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import pyro
import torch
from torch import nn
from torch.nn import functional as F

import ppvae
from ppvae.objectives import get_objective
from ppvae.train import parameters_of

# The staged datasets next to the checkout (../shared/datasets); random binary data otherwise.
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"
LOG_2PI = math.log(2 * math.pi)
CLOCKS = ("cpu", "wall")  # table order; "cpu" exists on the CPU device only
BATCH = 100
LR = 1e-3  # TrainConfig's defaults, for both implementations
BETAS = (0.9, 0.999)
EPS = 1e-8
# (label, ppvae objective name, particles)
OBJECTIVES = [("elbo", "elbo", 1), ("elbo-analytic", "elbo-analytic", 1), ("iwae k=5", "iwae", 5), ("iwae k=50", "iwae", 50)]


# --- the hand-written baseline --------------------------------------------------------------------


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class TorchVAE(nn.Module):
    """The one-layer IWAE-paper VAE in plain PyTorch, written as a careful user would: closed-form
    log-densities, log q(z|x) from the standard-normal noise, one decoder call for all particles.

    encoder: x -> 200 -> 200 -> (loc, softplus(raw)) of q(z|x), z in R^50
    decoder: z -> 200 -> 200 -> logits of p(x|z)
    """

    def __init__(self, x_dim: int = 784, hidden: tuple[int, ...] = (200, 200), z_dim: int = 50):
        super().__init__()
        self.encoder = _mlp([x_dim, *hidden, 2 * z_dim])
        self.decoder = _mlp([z_dim, *hidden[::-1], x_dim])

    @classmethod
    def like(cls, model: nn.Module, guide: nn.Module) -> "TorchVAE":
        """A baseline holding a copy of the ppvae pair's initial weights."""
        vae = cls()
        vae.encoder.load_state_dict(guide.layers[0].net.state_dict())
        vae.decoder.load_state_dict(model.decoder.state_dict())
        return vae.to(next(model.parameters()).device)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return loc, F.softplus(raw)

    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z) - log q(z | x) for k samples per datapoint, (k, B)."""
        loc, scale = self.encode(x)  # (B, Z)
        eps = torch.randn((k, *loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps  # (k, B, Z)
        logits = self.decoder(z)  # (k, B, D)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps.pow(2) + LOG_2PI).sum(-1) - scale.log().sum(-1)
        return log_px_z + log_pz - log_qz

    def loss(self, x: torch.Tensor, objective: str, k: int, num_data: int) -> torch.Tensor:
        """Minus the bound summed over the minibatch, times N / B (ppvae's convention)."""
        factor = num_data / x.shape[0]
        if objective == "elbo":
            return -factor * self.log_weights(x, k).mean(0).sum()
        if objective == "iwae":
            return -factor * (torch.logsumexp(self.log_weights(x, k), 0) - math.log(k)).sum()
        # elbo-analytic: KL(N(loc, scale) || N(0, 1)) in closed form
        loc, scale = self.encode(x)
        z = loc + scale * torch.randn_like(loc)
        logits = self.decoder(z)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum(-1) - scale.log().sum(-1)
        return -factor * (log_px_z - kl).sum()


# --- shared with benchmarks/log_likelihood.py -----------------------------------------------------


def machine(device: torch.device) -> str:
    """CPU model, threads, library versions (and the GPU), on one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = f"{names[0]} ({len(names)} logical CPUs visible)"
    except OSError:
        pass
    parts = [cpu, f"torch threads {torch.get_num_threads()}", f"torch {torch.__version__}", f"pyro {pyro.__version__}",
             f"python {platform.python_version()}"]
    if device.type == "cuda":
        parts.insert(0, torch.cuda.get_device_name(device))
    return ", ".join(parts)


def load_average() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux
        return "load average n/a"


def load_binary_data(root: Path, quick: bool, seed: int = 0) -> tuple[ppvae.Dataset | None, str]:
    """Real MNIST (dynamically binarized train, fixed-binarized test) when staged; else None."""
    try:
        ds = ppvae.load_dataset("mnist", root=root, limit=2000 if quick else None, seed=seed)
        return ds, f"MNIST from {root}"
    except ppvae.PPVAEError as e:
        return None, f"random binary data (MNIST not found: {type(e).__name__})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(args) -> torch.device:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    return device


def interleave(fns: dict[str, Callable[[], None]], rounds: int, block: int, device: torch.device) -> dict[str, dict[str, list[float]]]:
    """Run each fn ``block`` times per round, in a rotating order. Returns, per fn and clock
    ("wall", and "cpu" = this process's CPU time, on the CPU only), seconds per call of each block.

    Each block starts with one untimed call: the allocator's cache (and, for large tensors, which
    pages are mapped) is left in the state of the previous implementation, and the first call
    pays for it; in training only one implementation runs, so its steady state is what counts."""
    names = list(fns)
    clocks = {"wall": time.perf_counter} if device.type == "cuda" else {"cpu": time.process_time, "wall": time.perf_counter}
    times: dict[str, dict[str, list[float]]] = {n: {c: [] for c in clocks} for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = fns[name]
            fn()
            sync(device)
            start = {c: clock() for c, clock in clocks.items()}
            for _ in range(block):
                fn()
            sync(device)
            for c, clock in clocks.items():
                times[name][c].append((clock() - start[c]) / block)
    return times


def paired_ratio(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median and 25/75% quantiles of the per-round ratios num/den."""
    ratios = sorted(a / b for a, b in zip(num, den))
    if len(ratios) < 4:
        m = statistics.median(ratios)
        return m, ratios[0], ratios[-1]
    q = statistics.quantiles(ratios, n=4)
    return q[1], q[0], q[2]


# --- the benchmark --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per objective (default 30; 3 with --quick)")
    p.add_argument("--block-seconds", type=float, default=0.15, help="target length of one block of steps")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="where MNIST/raw lives")
    p.add_argument("--objectives", default=",".join(o[0] for o in OBJECTIVES), help="comma-separated subset of: " + ", ".join(o[0] for o in OBJECTIVES))
    p.add_argument("--no-pyro", action="store_true", help="skip the Pyro ELBO column")
    p.add_argument("--quick", action="store_true", help="a few steps of each, to check the script runs")
    p.add_argument("--compile", action="store_true",
                   help="also time ppvae's compiled loss (TrainConfig.compile) and the hand-written loss compiled alike")
    args = p.parse_args(argv)
    device = setup(args)
    rounds = args.rounds or (3 if args.quick else 30)
    block_seconds = 0.01 if args.quick else args.block_seconds
    wanted = [o for o in OBJECTIVES if o[0] in args.objectives.split(",")]
    if not wanted:
        sys.exit(f"--objectives: none of {args.objectives!r} is known")

    ds, source = load_binary_data(args.data_root, args.quick)
    gen = torch.Generator().manual_seed(0)
    if ds is not None:
        num_data = len(ds)
        batches = [x for _, x in zip(range(20), (b for _, b in ds.batches("train", BATCH, gen, device=device)))]
    else:
        num_data = 50_000
        batches = [torch.bernoulli(torch.full((BATCH, 784), 0.15), generator=gen).to(device) for _ in range(20)]

    print("ppvae training-step benchmark: VAE 784-200-200-50 tanh, Bernoulli decoder, batch 100, Adam lr 1e-3")
    print(f"date {datetime.date.today()}, device {device}, data: {source} (N={num_data})")
    print(f"machine: {machine(device)}")
    print(f"{load_average()} at start; command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{rounds} rounds per objective, blocks of ~{block_seconds * 1000:.0f} ms, rotating order")
    print()

    rows = []
    for label, name, k in wanted:
        rows.append(bench_objective(label, name, k, batches, num_data, device, rounds, block_seconds, args))
        r = rows[-1][next(iter(CLOCKS))] if device.type == "cpu" else rows[-1]["wall"]
        print(f"  done {label}: losses equal on the same random numbers (rel. diff {rows[-1]['agreement']:.1e}); "
              f"blocks of {rows[-1]['block']} steps; torch {r['torch']:.2f} ms, ppvae {r['ppvae']:.2f} ms", flush=True)

    print()
    print(table(rows))
    if args.compile:
        print()
        print(compiled_table(rows))
    print()
    print("ms/step: median over rounds of a block's mean step time. ratio: median [25%-75%] over rounds of the")
    print("per-round ratio of adjacent blocks. clock cpu: CPU time of this process, which other jobs on the")
    print("machine barely disturb (single-threaded torch); wall: elapsed time. pyro: Trace_ELBO (elbo) and")
    print("TraceMeanField_ELBO (elbo-analytic) .differentiable_loss on the same pair; none for iwae.")
    print(f"{load_average()} at end")


def table(rows: list[dict]) -> str:
    header = (f"{'objective':<14} {'clock':<5} {'torch ms/step':>13} {'ppvae ms/step':>13} {'ratio ppvae/torch':>21} "
              f"{'pyro ms/step':>12} {'ratio pyro/torch':>21}")
    lines = [header, "-" * len(header)]
    fmt = lambda q: f"{q[0]:.3f} [{q[1]:.2f}-{q[2]:.2f}]"  # noqa: E731
    for row in rows:
        for i, clock in enumerate(c for c in CLOCKS if c in row):
            r = row[clock]
            pyro_ms = f"{r['pyro']:.2f}" if "pyro" in r else "n/a"
            pyro_ratio = fmt(r["pyro_ratio"]) if "pyro" in r else "n/a"
            label = row["label"] if i == 0 else ""
            lines.append(f"{label:<14} {clock:<5} {r['torch']:>13.2f} {r['ppvae']:>13.2f} {fmt(r['ratio']):>21} "
                         f"{pyro_ms:>12} {pyro_ratio:>21}")
    return "\n".join(lines)


def compiled_table(rows: list[dict]) -> str:
    """ppvae's compiled step (TrainConfig.compile) and the hand-written step compiled alike, against
    the eager hand-written step and against each other."""
    header = (f"{'objective':<14} {'clock':<5} {'ppvae-c ms/step':>15} {'torch-c ms/step':>15} {'ppvae-c/torch':>21} "
              f"{'torch-c/torch':>21} {'ppvae-c/torch-c':>21}")
    lines = ["compiled (torch.compile, inductor, fallback_random):", header, "-" * len(header)]
    fmt = lambda q: f"{q[0]:.3f} [{q[1]:.2f}-{q[2]:.2f}]"  # noqa: E731
    for row in rows:
        for i, clock in enumerate(c for c in CLOCKS if c in row):
            r = row[clock]
            label = row["label"] if i == 0 else ""
            lines.append(f"{label:<14} {clock:<5} {r['ppvae_c']:>15.2f} {r['torch_c']:>15.2f} {fmt(r['ratio_c']):>21} "
                         f"{fmt(r['ratio_tc']):>21} {fmt(r['ratio_cc']):>21}")
    return "\n".join(lines)


def bench_objective(label, name, k, batches, num_data, device, rounds, block_seconds, args) -> dict:
    torch.manual_seed(0)
    model, guide, _ = ppvae.build("vae", 784)
    model.to(device)
    guide.to(device)
    vae = TorchVAE.like(model, guide)
    objective = get_objective(name, k)
    pyro_loss = None
    if not args.no_pyro and name != "iwae":
        pyro_loss = pyro_objective(name, model, guide, num_data)

    # Equal losses on the same random numbers: the columns compute the same estimator.
    x0 = batches[0]
    with torch.no_grad(), pyro.validation_enabled(False):
        objective.loss(model, guide, x0, num_data=num_data)  # fills ppvae's per-pair cache first
        torch.manual_seed(1)
        ref = float(vae.loss(x0, name, k, num_data))
        torch.manual_seed(1)
        got = float(objective.loss(model, guide, x0, num_data=num_data))
        checks = {"ppvae": got}
        if pyro_loss is not None:
            torch.manual_seed(1)
            checks["pyro"] = float(pyro_loss(x0))
    for who, value in checks.items():
        if not math.isclose(value, ref, rel_tol=1e-4):
            raise SystemExit(f"{label}: {who} loss {value} differs from the hand-written torch loss {ref}")
    agreement = max(abs(v - ref) / abs(ref) for v in checks.values())

    # Separate weights and optimizer state for each implementation: all start from the same weights.
    def ppvae_pair():
        m, g, _ = ppvae.build("vae", 784)
        m.load_state_dict(model.state_dict())
        g.load_state_dict(guide.state_dict())
        return m.to(device), g.to(device)

    counter = {"torch": 0, "ppvae": 0, "pyro": 0}

    def next_batch(who):
        counter[who] += 1
        return batches[counter[who] % len(batches)]

    vae_opt = torch.optim.Adam(vae.parameters(), lr=LR, betas=BETAS, eps=EPS)

    def torch_step():
        loss = vae.loss(next_batch("torch"), name, k, num_data)
        vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        vae_opt.step()

    pm, pg = model, guide
    p_opt = torch.optim.Adam(parameters_of(pm, pg, batches[0]), lr=LR, betas=BETAS, eps=EPS)

    def ppvae_step():  # ppvae/train.py::_train_epoch, without the progress bar
        loss = objective.loss(pm, pg, next_batch("ppvae"), num_data=num_data)
        p_opt.zero_grad(set_to_none=True)
        loss.backward()
        p_opt.step()

    fns = {"torch": torch_step, "ppvae": ppvae_step}
    if args.compile:  # ppvae's TrainConfig.compile, beside the same hand-written loss compiled alike
        from ppvae.compile import _OPTIONS, compiled_loss

        cm, cg = ppvae_pair()
        c_loss = compiled_loss(get_objective(name, k), cm, cg, batches[0])
        c_opt = torch.optim.Adam(parameters_of(cm, cg, batches[0]), lr=LR, betas=BETAS, eps=EPS)
        cvae = TorchVAE.like(model, guide)
        t_loss = torch.compile(lambda x: cvae.loss(x, name, k, num_data), dynamic=False, options=_OPTIONS)
        t_opt = torch.optim.Adam(cvae.parameters(), lr=LR, betas=BETAS, eps=EPS)
        with pyro.validation_enabled(False):  # the compiled losses equal the eager ones on the same draws
            torch.manual_seed(1)
            got_c = float(c_loss(cm, cg, x0, num_data).detach())
            torch.manual_seed(1)
            got_t = float(t_loss(x0).detach())
        for who, value in (("compiled ppvae", got_c), ("compiled torch", got_t)):
            if not math.isclose(value, ref, rel_tol=1e-4):
                raise SystemExit(f"{label}: {who} loss {value} differs from the hand-written torch loss {ref}")

        def ppvae_c_step():
            loss = c_loss(cm, cg, next_batch("ppvae_c"), num_data)
            c_opt.zero_grad(set_to_none=True)
            loss.backward()
            c_opt.step()

        def torch_c_step():
            loss = t_loss(next_batch("torch_c"))
            t_opt.zero_grad(set_to_none=True)
            loss.backward()
            t_opt.step()

        counter.update(ppvae_c=0, torch_c=0)
        fns.update(ppvae_c=ppvae_c_step, torch_c=torch_c_step)
    if pyro_loss is not None:
        ym, yg = ppvae_pair()
        y_loss = pyro_objective(name, ym, yg, num_data)
        y_opt = torch.optim.Adam(list(ym.parameters()) + list(yg.parameters()), lr=LR, betas=BETAS, eps=EPS)

        def pyro_step():
            loss = y_loss(next_batch("pyro"))
            y_opt.zero_grad(set_to_none=True)
            loss.backward()
            y_opt.step()

        fns["pyro"] = pyro_step

    with pyro.validation_enabled(False):
        # warm-up: allocator, caches, Pyro's plate-nesting guess; and a step time to size the blocks
        per_step = {}
        for who, fn in fns.items():
            for _ in range(2 if args.quick else 10):
                fn()
            sync(device)
            t0 = time.perf_counter()
            for _ in range(3):
                fn()
            sync(device)
            per_step[who] = (time.perf_counter() - t0) / 3
        block = max(1, round(block_seconds / per_step["torch"]))
        times = interleave(fns, rounds, block, device)

    row = {"label": label, "block": block, "agreement": agreement}
    for clock in times["torch"]:
        row[clock] = {who: 1000 * statistics.median(ts[clock]) for who, ts in times.items()}
        row[clock]["ratio"] = paired_ratio(times["ppvae"][clock], times["torch"][clock])
        if "pyro" in times:
            row[clock]["pyro_ratio"] = paired_ratio(times["pyro"][clock], times["torch"][clock])
        if "ppvae_c" in times:
            row[clock]["ratio_c"] = paired_ratio(times["ppvae_c"][clock], times["torch"][clock])
            row[clock]["ratio_tc"] = paired_ratio(times["torch_c"][clock], times["torch"][clock])
            row[clock]["ratio_cc"] = paired_ratio(times["ppvae_c"][clock], times["torch_c"][clock])
    return row


def pyro_objective(name: str, model, guide, num_data: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pyro's own estimator of the same ELBO: x -> the loss scaled by N / B."""
    elbo = pyro.infer.Trace_ELBO() if name == "elbo" else pyro.infer.TraceMeanField_ELBO()
    return lambda x: elbo.differentiable_loss(model, guide, x) * (num_data / x.shape[0])


if __name__ == "__main__":
    main()
