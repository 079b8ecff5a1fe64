"""The learned-prior comparison harness (``ppvae reproduce iop-comparison``): grid, shared
architecture, table, resumability.

The grid runs once per module at the ``quick`` budget (300 images, 2 epochs, 20 test points) on the
staged MNIST and Frey Face; its numbers are a machinery check only, so no ordering between the
priors is asserted.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ppvae.cli import main
from ppvae.errors import ConfigError
from ppvae.reproduce.iop_comparison import (
    ARCHITECTURE, BUDGETS, DATASETS, POINTS_FILE, POSTER_LL, PRIORS, load_data, model_options, parse_cells, run_cell, train_config,
)

ROOT = Path(__file__).resolve().parents[2] / "shared"
DATA = ROOT / "datasets"
needs_data = pytest.mark.skipif(not ((DATA / "MNIST").exists() and (DATA / "FreyFace").exists()),
                                reason="staged datasets not found")


def _mlp_params(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


# --- no data needed --------------------------------------------------------------------------


def test_cells_and_settings():
    assert parse_cells(None) == [(d, p) for d in DATASETS for p in PRIORS]
    assert parse_cells("iop,mnist/vae", ["mnist", "frey-face"]) == [("mnist", "iop"), ("frey-face", "iop"), ("mnist", "vae")]
    assert parse_cells("vampprior", ["frey-face"]) == [("frey-face", "vampprior")]
    for bad in ("mnist/gan", "omniglot/iop"):
        with pytest.raises(ConfigError, match="unknown cell"):
            parse_cells(bad)
    with pytest.raises(ConfigError, match="unknown dataset"):
        parse_cells(None, ["omniglot"])
    cfg = train_config(BUDGETS["paper"])
    # the authors' VAE optimizer: lr 1e-4, batch 100, KL warm-up 100 epochs, early stopping
    assert (cfg.lr, cfg.batch_size, cfg.kl_warmup_epochs) == (1e-4, 100, 100.0)
    assert cfg.early_stopping_patience is not None
    assert BUDGETS["paper"].eval_samples == BUDGETS["medium"].eval_samples == 5000
    assert BUDGETS["quick"].epochs <= 2 and BUDGETS["quick"].limit <= 500
    # Frey Face (16 steps per epoch) gets the authors' 100-epoch KL warm-up at the medium budget: a
    # 20-epoch warm-up (320 steps at lr 1e-4) collapsed the VampPrior there (encoder ignoring x,
    # log p(x) 566 at k=10 and k=5000 alike); see test_vampprior_frey_face_warm_up (slow)
    frey = BUDGETS["medium"].for_dataset("frey-face")
    assert (frey.kl_warmup_epochs, frey.patience, frey.name) == (100.0, 50, "medium")
    assert train_config(frey).kl_warmup_epochs == 100.0
    mnist = BUDGETS["medium"].for_dataset("mnist")
    assert mnist == BUDGETS["medium"].for_dataset("omniglot")  # no overrides: the budget itself
    assert (mnist.epochs, mnist.kl_warmup_epochs) == (BUDGETS["medium"].epochs, BUDGETS["medium"].kl_warmup_epochs)
    # warmup: the authors' 100-epoch KL warm-up run to its end on MNIST (the VampPrior is judged
    # only once the KL weight has reached 1), Frey Face as at medium
    warm = BUDGETS["warmup"].for_dataset("mnist")
    assert (warm.epochs, warm.kl_warmup_epochs, warm.patience) == (100, 100.0, None)
    assert train_config(warm).kl_warmup_epochs == warm.epochs == train_config(warm).epochs
    assert BUDGETS["warmup"].for_dataset("frey-face") == replace(frey, name="warmup", description=BUDGETS["warmup"].description)


def test_poster_numbers_match_reference():
    ref = ROOT / "REFERENCE.md"
    if not ref.exists():
        pytest.skip("REFERENCE.md not found")
    text = ref.read_text()
    for label, dataset in (("MNIST", "mnist"), ("FreyFaces", "frey-face")):
        m = re.search(rf"^\| {label} \| ([-\d.]+) \| ([-\d.]+) \| ([-\d.]+) \|", text, re.M)
        assert m, label
        assert [POSTER_LL[(dataset, p)] for p in PRIORS] == [float(v) for v in m.groups()]


# --- the quick grid on the real data ---------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("iop-quick")
    threads = torch.get_num_threads()
    try:
        rc = main(["reproduce", "iop-comparison", "--budget", "quick", "--out", str(out), "--data-root", str(DATA),
                   "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide: leave the other tests as they were
    assert rc == 0
    return out


def _results(out: Path) -> dict[tuple[str, str], dict]:
    return {(p.parent.parent.name, p.parent.name): json.loads(p.read_text()) for p in out.glob("*/*/result.json")}


@needs_data
def test_quick_table_has_six_finite_rows(quick_run):
    rows = list(csv.DictReader((quick_run / "table.csv").open()))
    assert [(r["dataset"], r["prior"]) for r in rows] == [(d, p) for d in DATASETS for p in PRIORS]
    for r in rows:
        for key in ("ll", "ll_se", "ll_k10", "wall_seconds"):
            assert math.isfinite(float(r[key])), (r["dataset"], r["prior"], key)
        assert float(r["poster_ll"]) == POSTER_LL[(r["dataset"], r["prior"])]
        assert float(r["difference"]) == pytest.approx(float(r["ll"]) - float(r["poster_ll"]))
        assert (r["budget"], r["num_test"], r["eval_samples"]) == ("quick", "20", "100")
        assert r["machine"].startswith("CPU")
        # only the IOP has a log normalizer; its normalized figure is log p(x) - log Z
        if r["prior"] == "iop":
            # a normalized figure only where log Z's importance weights are trustworthy
            if float(r["log_z_pareto_k"]) <= 0.7:
                assert float(r["ll_normalized"]) == pytest.approx(float(r["ll"]) - float(r["log_z"]))
            else:
                assert r["ll_normalized"] == ""
        else:
            assert r["log_z"] == "" and r["ll_normalized"] == ""
        # the paired difference to the standard VAE, from the per-point files, by hand
        if r["prior"] == "vae":
            assert r["vs_vae"] == ""
        else:
            a = torch.load(quick_run / r["dataset"] / r["prior"] / POINTS_FILE)
            b = torch.load(quick_run / r["dataset"] / "vae" / POINTS_FILE)
            assert a["ll"].shape == (20,) and a["ll_k10"].shape == (20,) and a["eval_samples"] == 100
            d = (a["ll"] - b["ll"]).double()
            assert float(r["vs_vae"]) == pytest.approx(d.mean().item(), abs=1e-6)
            assert float(r["vs_vae_se"]) == pytest.approx(d.std().item() / math.sqrt(20), abs=1e-6)
            # and the file's mean is the table's log p(x)
            assert a["ll"].double().mean().item() == pytest.approx(float(r["ll"]), abs=1e-6)
    for r in _results(quick_run).values():
        # wall time = whole epochs (T epochs, validation) summed over sessions + evaluation
        assert r["train_wall_seconds"] >= r["train_seconds"] > 0
        assert r["wall_seconds"] == pytest.approx(r["train_wall_seconds"] + r["eval_seconds"])
    md = (quick_run / "table.md").read_text()
    assert len([l for l in md.splitlines() if l.startswith("| mnist") or l.startswith("| frey-face")]) == 6
    assert "k=10" in md and "-85.84" in md and "1396.27" in md and "vs VAE (paired)" in md


@needs_data
def test_the_three_priors_share_encoder_and_decoder(quick_run):
    res = _results(quick_run)
    z, hidden = ARCHITECTURE["z_dims"][0], ARCHITECTURE["hidden"][0]
    for dataset, x_dim, out_per_pixel in (("mnist", 784, 1), ("frey-face", 560, 2)):  # Gaussian: loc and scale
        decoder = _mlp_params([z, *hidden, out_per_pixel * x_dim])
        encoder = _mlp_params([x_dim, *hidden]) + 2 * _mlp_params([hidden[-1], z])  # loc and scale heads
        for prior in PRIORS:
            r = res[(dataset, prior)]
            assert (r["decoder_parameters"], r["encoder_parameters"]) == (decoder, encoder), (dataset, prior)
            assert r["model_options"]["hidden"] == [hidden] and r["model_options"]["activation"] == "tanh"
            assert r["likelihood"] == ("bernoulli" if dataset == "mnist" else "normal")
        # what differs is the prior alone: none / K=500 pseudo-inputs / the 3x500 ratio network T
        assert res[(dataset, "vae")]["prior_parameters"] == 0
        assert res[(dataset, "vampprior")]["prior_parameters"] == 500 * x_dim
        assert res[(dataset, "iop")]["prior_parameters"] == _mlp_params([z, 500, 500, 500, 1])


@needs_data
def test_cells_resume_and_table_only(quick_run, capsys):
    before = {k: v["this_session_seconds"] for k, v in _results(quick_run).items()}
    # a finished cell is not touched
    main(["reproduce", "iop-comparison", "--budget", "quick", "--out", str(quick_run), "--data-root", str(DATA),
          "--device", "cpu", "--cells", "vae"])
    assert capsys.readouterr().out.count("done already") == 2
    # a cell whose result is lost resumes from last.pt: evaluated again, not retrained
    cell = quick_run / "mnist" / "iop"
    (cell / "result.json").unlink()
    metrics_before = (cell / "metrics.jsonl").read_text()
    main(["reproduce", "iop-comparison", "--budget", "quick", "--out", str(quick_run), "--data-root", str(DATA),
          "--device", "cpu", "--cells", "mnist/iop"])
    r = json.loads((cell / "result.json").read_text())
    assert r["epochs_trained"] == 2 and (cell / "metrics.jsonl").read_text() == metrics_before
    assert {k: v["this_session_seconds"] for k, v in _results(quick_run).items() if k != ("mnist", "iop")} == \
        {k: v for k, v in before.items() if k != ("mnist", "iop")}
    # --re-evaluate evaluates a finished cell again without training it
    stamp = (cell / "result.json").stat().st_mtime_ns
    main(["reproduce", "iop-comparison", "--budget", "quick", "--out", str(quick_run), "--data-root", str(DATA),
          "--device", "cpu", "--cells", "frey-face/iop", "--re-evaluate"])
    again = json.loads((quick_run / "frey-face" / "iop" / "result.json").read_text())
    assert again["epochs_trained"] == 2 and again["this_session_seconds"] != before[("frey-face", "iop")]
    assert (cell / "result.json").stat().st_mtime_ns == stamp  # other cells untouched
    # the IOP's log Z: defensive importance sampling, with its Pareto-k, and the prior-only figure
    assert math.isfinite(again["log_z"]) and math.isfinite(again["log_z_prior_mc"]) and again["log_z_pareto_k"] is not None
    # another budget in the same folder is refused, not mixed in
    (cell / "result.json").unlink()
    data = load_data("mnist", BUDGETS["quick"], str(DATA))
    with pytest.raises(ConfigError, match="other settings"):
        run_cell("mnist", "iop", BUDGETS["medium"], data, quick_run, device="cpu", log=lambda s: None)
    # --table-only rebuilds from what is present (mnist/iop now missing: "not run")
    (quick_run / "table.md").unlink()
    assert main(["reproduce", "iop-comparison", "--table-only", "--out", str(quick_run)]) == 0
    md = (quick_run / "table.md").read_text()
    assert "| mnist | IOP | not run |" in md and md.count("| frey-face |") == 3


def test_model_options_follow_the_data():
    class Fake:
        likelihood = "normal"
    assert model_options("iop", Fake()) == {**ARCHITECTURE, "likelihood": "normal"}


@needs_data
def test_log_z_script_on_a_trained_iop_cell(quick_run, capsys):
    from ppvae.experiments import iop_log_z

    assert iop_log_z.main([str(quick_run / "frey-face" / "iop"), "--samples", "2000", "--data-root", str(DATA)]) == 0
    rows = [l for l in capsys.readouterr().out.splitlines()[2:] if l.strip()]
    assert len(rows) == 9  # N(0, I) alone, 5 widened aggregate posteriors, 3 moment-matched Gaussians
    for row in rows:
        log_z, k_hat, ess = (float(v) for v in row.split()[-3:])
        assert math.isfinite(log_z) and math.isfinite(k_hat) and 1.0 <= ess <= 2000
    with pytest.raises(ConfigError, match="needs an 'iop' run"):
        iop_log_z.main([str(quick_run / "frey-face" / "vae"), "--data-root", str(DATA)])


@needs_data
def test_log_z_script_prints_ais_beside_the_proposals(quick_run, capsys):
    from ppvae.experiments import iop_log_z

    run = str(quick_run / "frey-face" / "iop")
    assert iop_log_z.main([run, "--method", "both", "--samples", "500", "--data-root", str(DATA),
                           "--temperatures", "5", "--chains", "8", "--repeats", "3", "--leapfrog-steps", "2", "--save"]) == 0
    out = capsys.readouterr().out
    assert out.count("scales x") == 5 and "annealed importance sampling: 5 temperatures (sigmoid)" in out
    log_z, se = (float(v) for v in re.search(r"log Z (\S+) \+- (\S+) \(all chains", out).groups())
    assert math.isfinite(log_z) and se > 0
    assert len(re.search(r"repeats: (.*) \(std", out).group(1).split()) == 3
    saved = json.loads((quick_run / "frey-face" / "iop" / iop_log_z.AIS_FILE).read_text())
    assert saved["log_z"] == pytest.approx(log_z, abs=1e-3) and len(saved["log_z_repeats"]) == 3
    assert saved["settings"]["temperatures"] == 5 and saved["cpu_seconds"] > 0
    with pytest.raises(ConfigError, match="temperatures must be a positive integer"):
        iop_log_z.main([run, "--method", "ais", "--temperatures", "0"])
