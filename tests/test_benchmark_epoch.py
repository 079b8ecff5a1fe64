"""Smoke test of ``benchmarks/epoch.py`` (whole-epoch speed, issue 8): a tiny run prints its rows.

No time is asserted. The run uses 500 staged binarized-MNIST images, one epoch and no pythae; it is
skipped when the staged datasets are missing (found as tests/conftest.py finds them).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NUMBER = r"([0-9]+\.[0-9]+)"


@pytest.mark.skipif(not (DATASETS / "BinarizedMNIST").is_dir(), reason=f"staged datasets not found at {DATASETS}")
def test_epoch_benchmark_prints_torch_and_ppvae_rows():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "epoch.py"), "--limit", "500", "--epochs", "1", "--skip-pythae",
         "--data-root", str(DATASETS)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    machine = next(l for l in out.splitlines() if l.startswith("machine: "))
    assert "torch threads 1" in machine and f"torch {torch.__version__}" in machine
    assert re.search(r"^date \d{4}-\d\d-\d\d, device cpu, data: binarized-mnist from .* \(N=500 x 784\)$", out, re.M)
    assert "pythae: skipped (--skip-pythae)" in out
    assert re.search(r"same loss on the same batch and random numbers: largest relative difference", out)
    for label in ("(a) hand-written torch", "(a') (a), fused Adam", "(c) ppvae.fit"):
        row = re.search(rf"^{re.escape(label)}\s+cpu\s+{NUMBER}\s+{NUMBER} \[{NUMBER}-{NUMBER}\]\s+{NUMBER}\s+"
                        rf"{NUMBER} \[{NUMBER}-{NUMBER}\]\s+{NUMBER}$", out, re.M)
        assert row, f"no cpu row for {label}:\n{out}"
        values = [float(v) for v in row.groups()]
        assert all(math.isfinite(v) and v > 0 for v in values), row.group(0)
    assert len(re.findall(rf"^\s+wall\s+{NUMBER}\s", out, re.M)) == 3
    assert re.search(rf"^\(c\) / \(a'\) epoch s, cpu: {NUMBER} \[{NUMBER}-{NUMBER}\]$", out, re.M)
    assert "(b) pythae" not in out
    assert re.search(rf"^ppvae's own per-epoch 'time' metric .*: median {NUMBER} s", out, re.M)
