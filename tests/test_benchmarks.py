"""Smoke tests of the benchmark scripts: each runs in its ``--quick`` mode and prints its figures.

No timing is asserted (a shared machine makes any threshold flaky); what is checked is that each
script finishes, reports every row it promises with positive finite numbers, states the machine it
ran on, and that what it derives from its own figures (the fastest chunk size) is consistent. The
hand-written baselines' agreement with ppvae is checked inside the scripts (they exit non-zero on a
mismatch), and the log-likelihood baseline's chunking rule is compared with ppvae's own here.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ppvae
import ppvae.likelihood as likelihood

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
NUMBER = r"([0-9][0-9,]*\.?[0-9]*)"


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--threads", "1", *args],
        capture_output=True, text=True, timeout=300, cwd=BENCH.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def number(s: str) -> float:
    return float(s.replace(",", ""))


def check_machine_line(out: str) -> None:
    line = next(l for l in out.splitlines() if l.startswith("machine: "))
    assert "torch threads 1" in line
    assert f"torch {torch.__version__}" in line
    assert re.search(r"^date \d{4}-\d\d-\d\d, device cpu", out, re.M)


def test_train_step_prints_every_objective():
    out = run("train_step.py")
    check_machine_line(out)
    for label in ("elbo", "elbo-analytic", "iwae k=5", "iwae k=50"):
        assert re.search(rf"done {re.escape(label)}: losses equal", out), label
        row = re.search(rf"^{re.escape(label)}\s+cpu\s+{NUMBER}\s+{NUMBER}\s+{NUMBER} \[{NUMBER}-{NUMBER}\]\s+(\S+)", out, re.M)
        assert row, f"no cpu row for {label}:\n{out}"
        torch_ms, ppvae_ms, ratio, lo, hi = (number(row.group(i)) for i in range(1, 6))
        assert all(math.isfinite(v) and v > 0 for v in (torch_ms, ppvae_ms, ratio))
        assert lo - 0.005 <= ratio <= hi + 0.005  # the quartiles are printed to 2 decimals
        # the Pyro column exists for the two ELBOs only
        assert (row.group(6) == "n/a") == label.startswith("iwae")
    # the wall-clock row follows each cpu row
    assert len(re.findall(r"^\s+wall\s+" + NUMBER, out, re.M)) == 4


def test_train_step_compiled_rows():
    """--compile: ppvae's compiled step (TrainConfig.compile) and the hand-written one compiled alike;
    the script itself exits non-zero if either compiled loss differs from the eager hand-written one."""
    out = run("train_step.py", "--compile", "--no-pyro", "--objectives", "elbo-analytic")
    assert "compiled (torch.compile" in out
    row = re.search(rf"^elbo-analytic\s+cpu\s+{NUMBER}\s+{NUMBER}" + rf"\s+{NUMBER} \[{NUMBER}-{NUMBER}\]" * 3 + "$",
                    out, re.M)
    assert row, out
    assert all(math.isfinite(number(v)) and number(v) > 0 for v in row.groups())


def test_adam_prints_the_three_implementations():
    out = run("adam.py")
    check_machine_line(out)
    for kind in ("default", "foreach", "fused"):
        row = re.search(rf"^{kind}\s+cpu\s+{NUMBER}\s+{NUMBER} \[{NUMBER}-{NUMBER}\]$", out, re.M)
        assert row, f"no cpu row for {kind}:\n{out}"
        assert all(math.isfinite(number(v)) and number(v) > 0 for v in row.groups())
    assert re.search(r"^default\s+cpu\s+\S+\s+1\.000 \[1\.00-1\.00\]$", out, re.M)
    # the same update up to rounding: fused Adam is a faster implementation, not another optimizer
    worst = float(re.search(r"largest difference from default's parameters: (\S+)$", out, re.M).group(1))
    assert worst < 1e-5


def test_log_likelihood_prints_throughput_and_sweep():
    out = run("log_likelihood.py")
    check_machine_line(out)
    assert re.search(r"^check: same estimates on \d+ points", out, re.M)
    row = re.search(rf"^cpu\s+{NUMBER}\s+{NUMBER}\s+{NUMBER} \[", out, re.M)
    assert row, out
    assert all(number(row.group(i)) > 0 for i in (1, 2, 3))
    sweep = {int(m.group(1)): number(m.group(2)) for m in re.finditer(rf"^\s+(\d+)\s+\d+ x \d+\s+{NUMBER}\s", out, re.M)}
    assert set(sweep) == {400, 800, likelihood.CHUNK_ELEMENTS}
    best = int(re.search(r"fastest by cpu time: chunk_elements=(\d+)", out).group(1))
    assert sweep[best] == max(sweep.values())


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("n, samples, chunk", [(16, 5000, 40_000), (16, 5000, 5_000), (10, 200, 400), (3, 7, 10), (5, 100, 2_500)])
def test_hand_written_evaluator_uses_ppvaes_chunks(monkeypatch, n, samples, chunk):
    """The baseline claims ppvae's batch/particle chunking: record the (points, particles) of every
    trace ppvae makes and of every decoder call the baseline makes, and compare."""
    bench = _load("log_likelihood")
    seen_ppvae, seen_torch = [], []
    real = likelihood.trace_pair

    def spy(model, guide, xb, *args, num_particles=1, **kwargs):
        seen_ppvae.append((xb.shape[0], num_particles))
        return real(model, guide, xb, *args, num_particles=num_particles, **kwargs)

    monkeypatch.setattr(likelihood, "trace_pair", spy)
    model, guide, _ = ppvae.build("vae", 6, {"z_dims": (2,), "hidden": ((4,),)})
    vae = bench.TorchVAE(6, (4,), 2)
    vae.decoder.register_forward_hook(lambda mod, inp, out: seen_torch.append((inp[0].shape[1], inp[0].shape[0])))
    x = torch.ones(n, 6)
    ppvae.log_likelihood(model, guide, x, num_samples=samples, chunk_elements=chunk)
    bench.torch_log_likelihood(vae, x, samples, chunk)
    assert seen_torch == seen_ppvae
    assert sum(b * k for b, k in seen_ppvae) == n * samples


def test_hand_written_evaluator_matches_ppvae():
    """Same random numbers, same estimates (the benchmark relies on this to compare like with like)."""
    bench = _load("log_likelihood")
    torch.manual_seed(0)
    model, guide, _ = ppvae.build("vae", 784)
    vae = bench.TorchVAE.like(model, guide)
    x = torch.bernoulli(torch.full((5, 784), 0.2), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    ref = bench.torch_log_likelihood(vae, x, 300, 1_000)
    torch.manual_seed(3)
    got = ppvae.log_likelihood(model, guide, x, num_samples=300, chunk_elements=1_000)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-3)


def test_mixture_prior_prints_times_and_errors():
    out = run("mixture_prior.py")
    check_machine_line(out)
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^(DiagonalNormalMixture|MixtureSameFamily)\s+([0-9.]+)\s+([0-9.e+-]+)$", out, re.M)}
    assert set(rows) == {"DiagonalNormalMixture", "MixtureSameFamily"}
    assert all(t > 0 for t, _ in rows.values())
    assert rows["DiagonalNormalMixture"][1] < 1e-3  # the float64 quadratic form: no cancellation error
    assert re.search(r"^speed-up: [0-9.]+x$", out, re.M)


def test_objectives_quality_prints_every_method():
    out = run("objectives_quality.py")
    check_machine_line(out)
    for label in ("iwae", "iwae-dreg", "miwae"):
        row = re.search(rf"^\| {re.escape(label)} \| .*? \| (\d+) \| {NUMBER} \| (-?{NUMBER}) \| {NUMBER} ± {NUMBER} \|", out, re.M)
        assert row, f"no row for {label}:\n{out}"
        assert int(row.group(1)) > 0 and number(row.group(5)) > 0  # steps taken, a positive test NLL
    assert "| iwae-dreg | iwae k=5, dreg |" in out and "| miwae | miwae k=10, groups=2 |" in out


def test_step_ablation_prints_the_four_steps():
    out = run("step_ablation.py")
    assert "losses equal on the same random numbers" in out
    for label in ("torch", "distributions", "ppvae traced", "ppvae"):
        row = re.search(rf"^{re.escape(label)}\s+{NUMBER}\s+{NUMBER}$", out, re.M)
        assert row, f"no row for {label}:\n{out}"
        assert number(row.group(1)) > 0 and number(row.group(2)) > 0
    assert re.search(rf"^torch\s+{NUMBER}\s+1\.000$", out, re.M)
