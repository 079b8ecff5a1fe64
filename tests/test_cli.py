"""The command line end to end, on a small slice of real MNIST and on the offline default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppvae.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_data = pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="staged datasets not found")


@needs_data
def test_train_evaluate_sample_on_real_mnist(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--dataset", "mnist", "--data-root", str(DATA), "--limit", "300", "--epochs", "2",
               "--batch-size", "50", "--objective", "iwae", "-k", "3", "--set", "z_dims=[2]",
               "--out", str(run), "--no-progress"])
    assert rc == 0
    for name in ("last.pt", "best.pt", "metrics.jsonl", "training_curves.png", "samples.png"):
        assert (run / name).exists(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    rc = main(["evaluate", str(run), "--num-samples", "50", "-k", "5", "--limit", "40"])
    assert rc == 0
    report = json.loads((run / "report.json").read_text())
    assert report["num_datapoints"] == 40 and report["dataset"] == "mnist"
    # the bounds are ordered as they must be (up to MC noise on 40 points: generous margin)
    assert report["elbo"] <= report["iwae_5"] + 0.5 and report["iwae_5"] <= report["log_px"] + 0.5
    assert report["active_units"]["z"]["total"] == 2
    for name in ("reconstructions.png", "latent_scatter.png", "manifold.png"):
        assert (run / name).exists(), name
    out = capsys.readouterr().out
    assert "log p(x) (S=50)" in out and "active units (z)" in out
    assert main(["sample", str(run), "--num", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()


def test_resume_continues_to_more_epochs(tmp_path):
    run = tmp_path / "r"
    base = ["train", "--dataset", "digits", "--limit", "200", "--batch-size", "50", "--out", str(run), "--no-progress"]
    assert main(base + ["--epochs", "1"]) == 0
    assert main(base + ["--epochs", "2", "--resume"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_user_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((120, 36)) < 0.3).astype(np.float32)
    np.savez(tmp_path / "mine.npz", x_train=x[:100], x_test=x[100:])
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "mine.npz"), "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--num-samples", "10", "-k", "2"]) == 0
    assert json.loads((run / "report.json").read_text())["num_datapoints"] == 20


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--model", "vea", "--epochs", "1"], ["unknown model", "vae"]),
        (["train", "--objective", "iwea", "--epochs", "1"], ["unknown objective", "iwae"]),
        (["train", "--dataset", "mnits", "--epochs", "1"], ["mnist"]),
        (["train", "--set", "z_dimz=[2]", "--epochs", "1"], ["no option", "z_dims"]),
        (["train", "--lr-schedule", "fast", "--epochs", "1"], ["lr_schedule", "constant"]),
        (["evaluate", "/nonexistent/run"], ["no checkpoint"]),
    ],
)
def test_bad_input_is_one_clear_line(argv, words, tmp_path, capsys):
    argv = argv + (["--out", str(tmp_path / "o")] if argv[0] == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_missing_data_file_names_file_and_fix(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path) in err and "download" in err


def test_help_of_every_command():
    for cmd in ([], ["list"], ["train"], ["evaluate"], ["sample"]):
        r = subprocess.run([sys.executable, "-m", "ppvae.cli", *cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: ppvae" in r.stdout


def test_list_names_every_family(capsys):
    from ppvae.registry import FAMILIES

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in FAMILIES:
        assert name in out


def test_objective_options_and_grad_estimator_are_recorded_and_resumed(tmp_path, capsys):
    run = tmp_path / "r"
    base = ["train", "--dataset", "digits", "--limit", "200", "--batch-size", "50", "--out", str(run), "--no-progress",
            "--objective", "renyi", "-k", "4", "--objective-option", "alpha=0.25", "--grad-estimator", "dreg"]
    assert main(base + ["--epochs", "1"]) == 0
    assert "renyi, k=4, alpha=0.25, dreg gradients" in capsys.readouterr().out
    import torch

    config = torch.load(run / "last.pt", weights_only=False)["train_config"]
    assert config["objective_options"] == {"alpha": 0.25} and config["grad_estimator"] == "dreg"
    # --resume takes them from the checkpoint ...
    assert main(["train", "--dataset", "digits", "--limit", "200", "--out", str(run), "--no-progress",
                 "--epochs", "2", "--resume"]) == 0
    assert "resuming vae (renyi, k=4, alpha=0.25, dreg gradients)" in capsys.readouterr().out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # ... and refuses ones that contradict them
    assert main(base + ["--epochs", "3", "--resume", "--objective-option", "alpha=0.5"]) == 2
    assert "--objective-option alpha 0.5 (the run has 0.25)" in capsys.readouterr().err
    # bad values: one line that says what is wrong
    bad = ["train", "--dataset", "digits", "--limit", "100", "--out", str(tmp_path / "b"), "--no-progress"]
    for extra, said in ((["--objective", "miwae", "-k", "5", "--objective-option", "groups=2"], "multiple of groups"),
                        (["--objective", "elbo-analytic", "--grad-estimator", "stl"], "use objective 'elbo'"),
                        (["--objective", "renyi", "--objective-option", "alpha"], "--objective-option expects KEY=VALUE")):
        assert main(bad + extra) == 2
        assert said in capsys.readouterr().err


def test_list_names_objectives_their_options_and_estimators(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("renyi", "miwae", "ciwae", "piwae", "alpha=0.5", "groups=1", "beta=0.5", "dreg", "stl", "Li & Turner 2016"):
        assert word in out, word
