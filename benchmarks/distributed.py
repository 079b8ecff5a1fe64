"""Data parallelism on one machine: 2 processes x 1 thread against 1 process x 2 threads.

    python benchmarks/distributed.py --data-root ../shared/datasets            # an MNIST epoch, IWAE k=5
    python benchmarks/distributed.py --data-root ../shared/datasets --limit 5000 --loglik-points 500

Trains one epoch of the IWAE paper's 1-layer model with the IWAE k=5 objective at global batch
100 (a) in one process with 2 torch threads and (b) under ``torchrun --nproc_per_node=2`` with one
thread per process, and times ``ppvae evaluate``'s sharded log p(x) the same two ways. Prints the
steps-only seconds of the epoch (the trainer's ``time`` metric), the process CPU seconds, and the
log p(x) throughput in datapoint-samples per second (wall clock). Run it on a quiet machine: the
figures are wall-clock ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))  # torch takes its thread count from it
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    p.add_argument("--limit", type=int, default=None, help="first N images of each split (default: all)")
    p.add_argument("--loglik-points", type=int, default=1000)
    p.add_argument("--loglik-samples", type=int, default=1000)
    args = p.parse_args(argv)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.machine())
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="ppvae-dist-bench-"))
    train = ["train", "--dataset", "mnist", "--data-root", args.data_root, "--objective", "iwae", "-k", "5",
             "--epochs", "1", "--batch-size", "100", "--no-progress", "--device", "cpu"]
    if args.limit:
        train += ["--limit", str(args.limit)]
    rows = []
    for label, launcher, threads in (("1 process x 2 threads", [sys.executable, "-m", "ppvae"], 2),
                                     ("2 processes x 1 thread", [torchrun, "--nproc_per_node=2", "-m", "ppvae"], 1)):
        out = work / label.replace(" ", "_")
        wall = run([*launcher, *train, "--out", str(out)], threads)
        m = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        ev = [*launcher, "evaluate", str(out), "--num-samples", str(args.loglik_samples), "--limit", str(args.loglik_points),
              "-k", "5", "--parzen", "off", "--sample-quality", "off", "--device", "cpu"]
        eval_wall = run(ev, threads)
        rows.append((label, m["time"], m["cpu_seconds"], wall, args.loglik_points * args.loglik_samples / eval_wall, eval_wall))
    print(f"{'':<24}{'epoch steps s':>14}{'rank-0 CPU s':>14}{'whole run s':>13}{'log p(x) samples/s':>20}{'evaluate s':>12}")
    for label, t, c, w, rate, ew in rows:
        print(f"{label:<24}{t:>14.1f}{c:>14.1f}{w:>13.1f}{rate:>20.0f}{ew:>12.1f}")
    print(f"speed-up of 2 processes over 2 threads: epoch {rows[0][1] / rows[1][1]:.2f}x, evaluate {rows[0][5] / rows[1][5]:.2f}x")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
