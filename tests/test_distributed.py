"""Data-parallel training with torch.distributed on the CPU (gloo, 2 processes started as torchrun
would): the same parameters as one process at the same global batch, bit-identical resume on both
ranks, and a clear error (not a hang) when a rank dies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "workers" / "distributed_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(mode: str, out: Path, world: int, epochs: int = 2, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Start ``world`` ranks of the worker (torchrun's environment variables) and wait for all."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), PPVAE_DIST_TIMEOUT="30", OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), mode, str(out), str(epochs)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for p in procs:
        try:
            stdout, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"a rank of {mode} hung for {timeout} s")
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout))
    return results


def params(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "params.pt")


def test_two_ranks_match_one_process_at_the_same_global_batch(tmp_path):
    one = launch("deterministic", tmp_path / "one", 1)
    two = launch("deterministic", tmp_path / "two", 2)
    for r in one + two:
        assert r.returncode == 0, r.stdout[-2000:]
    a, b = params(tmp_path / "one"), params(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    import ppvae  # training moved the weights away from where ppvae.build(seed=0) put them

    model, guide, _ = ppvae.build("aae", 64, {"z_dim": 2, "hidden": [16], "encoder": "deterministic"}, seed=0)
    start = {**model.state_dict(), **{f"guide.{k}": v for k, v in guide.state_dict().items()}}
    moved = [k for k in a if not torch.allclose(a[k], start[k])]
    assert set(moved) == {k for k in a if "weight" in k or "bias" in k}, moved
    # metrics are rank 0's only, one line per epoch, with the mean over ranks of the phase losses
    lines = (tmp_path / "two" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_an_interrupted_two_rank_run_resumes_bit_identically(tmp_path):
    straight = launch("vae", tmp_path / "straight", 2, epochs=3)
    first = launch("vae", tmp_path / "resumed", 2, epochs=2)
    second = launch("vae", tmp_path / "resumed", 2, epochs=3)
    for r in straight + first + second:
        assert r.returncode == 0, r.stdout[-2000:]
    a, b = params(tmp_path / "straight"), params(tmp_path / "resumed")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ckpt = torch.load(tmp_path / "resumed" / "run" / "last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2


def test_a_rank_that_dies_stops_the_others_with_an_error(tmp_path):
    results = launch("die", tmp_path / "die", 2, epochs=3, timeout=90)
    assert results[1].returncode == 3
    assert results[0].returncode == 1 and "RANK 0 ERROR" in results[0].stdout, results[0].stdout[-2000:]


def test_sharded_log_likelihood_equals_the_single_process_values_exactly(tmp_path):
    import ppvae

    results = launch("loglik", tmp_path, 2)
    assert all(r.returncode == 0 for r in results), results[0].stdout[-2000:] + results[1].stdout[-2000:]
    sharded = torch.load(tmp_path / "log_px.pt")
    torch.set_num_threads(1)
    data = ppvae.load_dataset("digits", limit=240)
    model, guide, _ = ppvae.build("vae", data.x_dim, {"z_dims": [2], "hidden": [[16]]}, seed=0)
    single = ppvae.log_likelihood(model, guide, data.test, num_samples=40, batch_size=16, seed=0, diagnostics=True)
    assert torch.equal(sharded["log_px"], single.log_px)
    assert torch.equal(sharded["pareto_k"], single.pareto_k)


def test_seeded_draws_are_tied_to_the_datapoints_not_the_split():
    import ppvae

    torch.set_num_threads(1)
    data = ppvae.load_dataset("digits", limit=240)
    model, guide, _ = ppvae.build("vae", data.x_dim, {"z_dims": [2], "hidden": [[16]]}, seed=0)
    x = data.test[:64]
    whole = ppvae.log_likelihood(model, guide, x, num_samples=30, batch_size=16, seed=5)
    torch.rand(10)  # whatever the caller's generator did meanwhile
    tail = ppvae.log_likelihood(model, guide, x[32:], num_samples=30, batch_size=16, seed=5 + 32)
    assert torch.equal(whole[32:], tail)
    other = ppvae.log_likelihood(model, guide, x, num_samples=30, batch_size=16, seed=6)
    assert not torch.equal(whole, other)
