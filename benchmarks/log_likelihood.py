"""Throughput of ``ppvae.log_likelihood`` against a hand-written vectorized PyTorch evaluator.

Both compute the importance-sampled estimate (Burda et al. 2016, section 5)::

    log p(x_i) ~= logsumexp_s [log p(x_i | z_s) + log p(z_s) - log q(z_s | x_i)] - log S,   z_s ~ q(z | x_i)

on the IWAE paper's one-layer VAE (``ppvae.build("vae", 784)``: 784-200-200-50 tanh, Bernoulli
decoder) and MNIST test points (fixed binarization; random binary data when MNIST is not staged).
The hand-written evaluator encodes a batch of points once, draws (S_chunk, b, 50) latents, decodes
them in one call and keeps a running logsumexp over chunks, with the same batch and chunk sizes
as ppvae's (``chunk_elements`` particles x datapoints per trace). Before timing, the two are checked
to give the same estimates on the same random numbers. Throughput is datapoint-samples per second
(points x S / seconds); the weights are untrained, which does not change the arithmetic.

The two run interleaved, one block of points each per round, in a rotating order; the figures are
medians over rounds (CPU time of the process, little disturbed by other jobs on a shared machine,
and wall-clock time). A second part sweeps ``chunk_elements`` for ppvae to find the fastest
default on this machine. Nothing here asserts a time.

Run from the repository root::

    python benchmarks/log_likelihood.py                 # CPU, 1 thread
    python benchmarks/log_likelihood.py --device cuda
    python benchmarks/log_likelihood.py --quick         # seconds, for the tests

References:
  Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import argparse
import datetime
import math
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from torch.nn import functional as F

import ppvae
from ppvae.likelihood import CHUNK_ELEMENTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import (  # noqa: E402  (the sibling benchmark: machine line, data, the torch VAE)
    DEFAULT_DATA_ROOT,
    TorchVAE,
    load_average,
    load_binary_data,
    machine,
    paired_ratio,
    setup,
    sync,
)

SWEEP = (1_250, 2_500, 5_000, 10_000, 20_000, 40_000, 80_000)


def chunking(n: int, num_samples: int, chunk_elements: int) -> tuple[int, int]:
    """(datapoints per batch, particles per trace): the same rule as ppvae.log_likelihood."""
    batch = max(1, min(n, chunk_elements // min(num_samples, chunk_elements)))
    return batch, max(1, min(num_samples, chunk_elements // batch))


@torch.no_grad()
def torch_log_likelihood(vae: TorchVAE, x: torch.Tensor, num_samples: int, chunk_elements: int) -> torch.Tensor:
    """The hand-written evaluator: log p(x_i) for each row of x, shape (N,)."""
    n = x.shape[0]
    batch, particles = chunking(n, num_samples, chunk_elements)
    out = torch.empty(n, device=x.device)
    for start in range(0, n, batch):
        xb = x[start : start + batch]
        loc, scale = vae.encode(xb)  # (b, Z), once per batch of points
        log_scale = scale.log().sum(-1)
        running = None
        for s0 in range(0, num_samples, particles):
            k = min(particles, num_samples - s0)
            eps = torch.randn((k, *loc.shape), dtype=loc.dtype, device=loc.device)
            z = loc + scale * eps  # (k, b, Z)
            logits = vae.decoder(z)  # (k, b, D)
            log_px_z = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
            log_w = log_px_z - 0.5 * z.pow(2).sum(-1) + 0.5 * eps.pow(2).sum(-1) + log_scale  # the 2 pi terms cancel
            lse = torch.logsumexp(log_w, 0)
            running = lse if running is None else torch.logaddexp(running, lse)
        out[start : start + xb.shape[0]] = running - math.log(num_samples)
    return out


def interleave_blocks(fns: dict, x: torch.Tensor, rounds: int, points: int, device: torch.device) -> dict:
    """Each round, each fn evaluates the next ``points`` rows of x (all fns the same rows).
    Returns per fn and clock the seconds of each block (and, under "minflt", its minor page faults:
    the first touch of freshly mapped memory, which large temporaries pay on every allocation)."""
    names = list(fns)
    clocks = {"wall": time.perf_counter} if device.type == "cuda" else {"cpu": time.process_time, "wall": time.perf_counter}
    clocks["minflt"] = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = {n: {c: [] for c in clocks} for n in names}
    n = x.shape[0]
    for r in range(rounds):
        start = (r * points) % n
        xb = x[start : start + points]
        if xb.shape[0] < points:  # wrap around
            xb = torch.cat([xb, x[: points - xb.shape[0]]])
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync(device)
            t0 = {c: clock() for c, clock in clocks.items()}
            fns[name](xb)
            sync(device)
            for c, clock in clocks.items():
                times[name][c].append(clock() - t0[c])
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 12; 2 with --quick)")
    p.add_argument("--points", type=int, default=None, help="test points per block (default 16; 4 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="importance samples per point (default 5000; 200 with --quick)")
    p.add_argument("--chunk-elements", type=int, default=CHUNK_ELEMENTS,
                   help=f"chunk size of the ppvae/torch comparison (default ppvae's, {CHUNK_ELEMENTS})")
    p.add_argument("--sweep", default=None, help="comma-separated chunk_elements values for the sweep (default "
                   + ",".join(map(str, SWEEP)) + "; empty string: no sweep)")
    p.add_argument("--sweep-rounds", type=int, default=None, help="rounds of the sweep (default 6; 2 with --quick)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="where MNIST/raw lives")
    p.add_argument("--quick", action="store_true", help="a small run, to check the script works")
    args = p.parse_args(argv)
    device = setup(args)
    rounds = args.rounds or (2 if args.quick else 12)
    points = args.points or (4 if args.quick else 16)
    samples = args.samples or (200 if args.quick else 5000)
    sweep_rounds = args.sweep_rounds or (2 if args.quick else 6)
    if args.sweep is None:
        sweep = (400, 800, CHUNK_ELEMENTS) if args.quick else SWEEP
    else:
        sweep = tuple(int(s) for s in args.sweep.split(",") if s.strip())

    ds, source = load_binary_data(args.data_root, args.quick)
    x = ds.test.to(device) if ds is not None else torch.bernoulli(
        torch.full((1000, 784), 0.15), generator=torch.Generator().manual_seed(0)).to(device)
    torch.manual_seed(0)
    model, guide, _ = ppvae.build("vae", 784)
    model.to(device).eval()
    guide.to(device).eval()
    vae = TorchVAE.like(model, guide).eval()
    chunk = args.chunk_elements
    batch, particles = chunking(points, samples, chunk)

    print("ppvae.log_likelihood benchmark: VAE 784-200-200-50 tanh, Bernoulli decoder (untrained weights)")
    print(f"date {datetime.date.today()}, device {device}, data: {source} (test points)")
    print(f"machine: {machine(device)}")
    print(f"{load_average()} at start; command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"S={samples} samples per point, blocks of {points} points, {rounds} rounds; chunk_elements={chunk} "
          f"(ppvae's default: {CHUNK_ELEMENTS}): {batch} points x {particles} samples per trace")
    print()

    # Same estimates on the same random numbers: the two compute the same estimator.
    with pyro.validation_enabled(False):
        ppvae.log_likelihood(model, guide, x[:2], num_samples=4)  # fills ppvae's per-pair cache first
        xs = x[: min(points, 8)]
        torch.manual_seed(1)
        ref = torch_log_likelihood(vae, xs, samples, chunk)
        torch.manual_seed(1)
        got = ppvae.log_likelihood(model, guide, xs, num_samples=samples, chunk_elements=chunk)
    if not torch.allclose(got, ref, rtol=1e-4, atol=1e-2):
        raise SystemExit(f"ppvae.log_likelihood {got.tolist()} differs from the hand-written {ref.tolist()}")
    print(f"check: same estimates on {xs.shape[0]} points (max |diff| {float((got - ref).abs().max()):.2e} nats)")

    fns = {
        "torch": lambda xb: torch_log_likelihood(vae, xb, samples, chunk),
        "ppvae": lambda xb: ppvae.log_likelihood(model, guide, xb, num_samples=samples, chunk_elements=chunk),
    }
    for fn in fns.values():  # warm-up
        fn(x[:points])
    times = interleave_blocks(fns, x, rounds, points, device)
    work = points * samples
    print()
    header = f"{'clock':<6} {'torch samples/s':>16} {'ppvae samples/s':>16} {'ratio ppvae/torch':>21}"
    print(header)
    print("-" * len(header))
    for clock in (c for c in times["torch"] if c != "minflt"):
        t_rate = work / statistics.median(times["torch"][clock])
        p_rate = work / statistics.median(times["ppvae"][clock])
        m, lo, hi = paired_ratio(times["torch"][clock], times["ppvae"][clock])  # throughput ratio = time ratio inverted
        print(f"{clock:<6} {t_rate:>16,.0f} {p_rate:>16,.0f} {f'{m:.3f} [{lo:.2f}-{hi:.2f}]':>21}")
    faults = {who: statistics.median(t["minflt"]) / work for who, t in times.items()}
    print(f"{'faults':<6} {faults['torch']:>16.2f} {faults['ppvae']:>16.2f}   minor page faults per datapoint-sample")
    print("samples/s: datapoint-samples per second, points x S / median block time; ratio: median [25%-75%]")
    print("over rounds of the per-round throughput ratio (>= 1: ppvae at least as fast). cpu: CPU time of")
    print("the process (user + system), little disturbed by other jobs; wall: elapsed time.")

    if sweep:
        print()
        print(f"chunk_elements sweep (ppvae.log_likelihood, S={samples}, blocks of {points} points, {sweep_rounds} rounds):")
        sweep_fns = {
            c: (lambda xb, c=c: ppvae.log_likelihood(model, guide, xb, num_samples=samples, chunk_elements=c)) for c in sweep
        }
        for fn in sweep_fns.values():
            fn(x[:points])
        st = interleave_blocks(sweep_fns, x, sweep_rounds, points, device)
        clocks = [c for c in st[sweep[0]] if c != "minflt"]
        header = (f"{'chunk_elements':>14} {'points x samples/trace':>22} " + " ".join(f"{c + ' samples/s':>16}" for c in clocks)
                  + f" {'faults/sample':>13}")
        print(header)
        print("-" * len(header))
        rates = {}
        for c in sweep:
            b, k = chunking(points, samples, c)
            rates[c] = {clock: work / statistics.median(st[c][clock]) for clock in clocks}
            default = "  (default)" if c == CHUNK_ELEMENTS else ""
            print(f"{c:>14} {f'{b} x {k}':>22} " + " ".join(f"{rates[c][clock]:>16,.0f}" for clock in clocks)
                  + f" {statistics.median(st[c]['minflt']) / work:>13.2f}{default}")
        best = max(sweep, key=lambda c: rates[c][clocks[0]])
        print(f"fastest by {clocks[0]} time: chunk_elements={best}")
    print(f"{load_average()} at end")


if __name__ == "__main__":
    main()
