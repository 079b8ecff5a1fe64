"""A run folder from the command line and the API: same seed -> same run, an existing run is never
overwritten silently, ``--resume`` takes its settings from the checkpoint, finished runs train
nothing, and a missing ``last.pt`` offers ``best.pt``."""

from __future__ import annotations

import json

import pytest
import torch

import ppvae
import ppvae.checkpoint as checkpoint
from ppvae.cli import main
from ppvae.errors import CheckpointError, ConfigError

QUICK = ["--dataset", "digits", "--limit", "300", "--set", "z_dims=[2]", "--set", "hidden=[[16]]", "--no-progress"]


def train(capsys, out, *extra) -> tuple[int, str]:
    rc = main(["train", *QUICK, "--out", str(out), *extra])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ppvae.train.TIMING_KEYS} for r in rows]


def test_the_same_seed_gives_the_same_run_from_the_cli(tmp_path, capsys):
    # in one process, so torch's generator is in a different state for the second run: only
    # seeding before the networks are built makes the two runs agree
    for name in ("a", "b"):
        assert train(capsys, tmp_path / name, "--epochs", "2", "--seed", "4")[0] == 0
    assert without_times(metrics(tmp_path / "a")) == without_times(metrics(tmp_path / "b"))
    a, b = (checkpoint.load(tmp_path / n / "last.pt") for n in "ab")
    for key in ("model_state", "guide_state"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), k
    assert train(capsys, tmp_path / "c", "--epochs", "2", "--seed", "5")[0] == 0
    assert metrics(tmp_path / "c")[0]["train_loss"] != metrics(tmp_path / "a")[0]["train_loss"]


def test_build_with_a_seed_fixes_the_initial_weights():
    m1, g1, _ = ppvae.build("vae", 64, {"z_dims": [2]}, seed=1)
    torch.rand(5)  # whatever happened in between
    m2, g2, _ = ppvae.build("vae", 64, {"z_dims": [2]}, seed=1)
    assert all(torch.equal(p, q) for p, q in zip([*m1.parameters(), *g1.parameters()], [*m2.parameters(), *g2.parameters()]))


def test_an_existing_run_is_not_overwritten_silently(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, out, "--epochs", "1")[0] == 0
    before = (out / "last.pt").read_bytes()
    rc, text = train(capsys, out, "--epochs", "1", "--seed", "2")
    assert rc == 2 and "already holds a run" in text and "--resume" in text and "--overwrite" in text
    assert (out / "last.pt").read_bytes() == before
    rc, _ = train(capsys, out, "--epochs", "1", "--seed", "2", "--overwrite")
    assert rc == 0 and (out / "last.pt").read_bytes() != before and len(metrics(out)) == 1
    # the API refuses too
    model, guide, _ = ppvae.build("vae", 64, {"z_dims": [2], "hidden": [[16]]})
    with pytest.raises(ConfigError, match="already holds a run"):
        ppvae.fit(model, guide, ppvae.load_dataset("digits", limit=300), epochs=1, out_dir=out, progress=False)


def test_resume_takes_everything_from_the_checkpoint(tmp_path, capsys):
    settings = ["--objective", "iwae", "-k", "3", "--lr", "0.003", "--kl-warmup", "2", "--seed", "7"]
    assert train(capsys, tmp_path / "straight", "--epochs", "3", *settings)[0] == 0
    assert train(capsys, tmp_path / "resumed", "--epochs", "2", *settings)[0] == 0
    rc = main(["train", "--resume", "--out", str(tmp_path / "resumed"), "--epochs", "3", "--no-progress"])
    assert rc == 0
    assert without_times(metrics(tmp_path / "straight")) == without_times(metrics(tmp_path / "resumed"))
    ckpt = checkpoint.load(tmp_path / "resumed" / "last.pt")
    assert ckpt["train_config"]["objective"] == "iwae" and ckpt["train_config"]["num_particles"] == 3


def test_resume_with_contradicting_options_names_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, out, "--epochs", "1")[0] == 0
    rc, text = train(capsys, out, "--resume", "--epochs", "2", "--lr", "0.1", "--set", "z_dims=[3]")
    assert rc == 2
    assert "--lr 0.1 (the run has 0.001)" in text and "--set z_dims [3] (the run has [2])" in text
    assert len(metrics(out)) == 1


def test_resuming_a_finished_or_early_stopped_run_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, out, "--epochs", "2")[0] == 0
    for _ in range(2):  # today: the same message each time, and still 2 epochs
        rc, text = train(capsys, out, "--resume", "--epochs", "2")
        assert rc == 0 and "already at epoch 2 of 2: nothing to train" in text
        assert len(metrics(out)) == 2

    from tests.test_train import ShiftModel, prior_guide, shifted_data  # a run that stops early

    stopped = tmp_path / "stopped"
    kw = dict(objective="elbo", epochs=10, batch_size=50, lr=0.05, early_stopping_patience=1, out_dir=stopped, progress=False)
    assert ppvae.fit(ShiftModel(3), prior_guide, shifted_data(0.0), **kw).stopped_early
    again = ppvae.fit(ShiftModel(3), prior_guide, shifted_data(0.0), resume=True, **kw)
    assert again.epochs_trained == 0 and "stopped early at epoch 2" in again.message
    assert len(again.history) == 2 and checkpoint.load(stopped / "last.pt")["epoch"] == 2


def test_resume_without_a_readable_last_checkpoint_offers_best(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, out, "--epochs", "2")[0] == 0
    best_epoch = checkpoint.load(out / "best.pt")["epoch"]
    (out / "last.pt").write_bytes(b"truncated")
    rc, text = train(capsys, out, "--resume", "--epochs", "3")
    assert rc == 2 and f"best.pt is readable (epoch {best_epoch})" in text and "--resume best" in text
    rc, _ = train(capsys, out, "--resume", "best", "--epochs", "3")
    assert rc == 0 and [m["epoch"] for m in metrics(out)] == [*range(1, best_epoch + 1), *range(best_epoch + 1, 4)]
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ppvae.fit(*ppvae.build("vae", 64)[:2], ppvae.load_dataset("digits", limit=300), out_dir=tmp_path / "empty",
                  resume=True, progress=False)


@pytest.mark.parametrize("args, message", [
    (["--grad-clip", "0"], "grad_clip must be a positive maximum gradient norm"),
    (["--kl-warmup", "-5"], "kl_warmup_epochs must be zero"),
    (["--lr", "nan"], "lr must be a positive number"),
])
def test_bad_training_settings_are_refused_before_any_work(tmp_path, capsys, args, message):
    rc, text = train(capsys, tmp_path / "run", *args)
    assert rc == 2 and message in text
    assert not (tmp_path / "run" / "last.pt").exists()


def test_an_out_folder_that_cannot_be_written_is_refused_first(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, text = train(capsys, blocker / "run")
    assert rc == 2 and "is a file" in text
