"""Evaluation of models without a likelihood: the reason is found up front, and `ppvae evaluate`
reports the Parzen window and classifier scores instead of failing."""

from __future__ import annotations

import json

import torch

import ppvae
from ppvae.cli import main
from ppvae.evaluate_samples import dataset_classifier, dataset_sample_quality, likelihood_unavailable, model_samples


def test_the_reason_a_pair_has_no_likelihood_is_found_up_front(digits):
    x = digits.test[:4]
    model, guide, _ = ppvae.build("aae", digits.x_dim, {"hidden": [16]}, seed=0)
    assert "Delta" in likelihood_unavailable(model, guide, x)
    model, guide, _ = ppvae.build("aae", digits.x_dim, {"hidden": [16], "encoder": "gaussian"}, seed=0)
    assert likelihood_unavailable(model, guide, x) is None
    state = torch.get_rng_state()
    likelihood_unavailable(model, guide, x)
    assert torch.equal(state, torch.get_rng_state())  # the probe draws leave the caller's generator alone


def test_the_dataset_classifier_is_cached_and_scores_real_data_above_one_class(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("PPVAE_CACHE", str(tmp_path))
    clf = dataset_classifier(digits, epochs=20)
    assert clf.info["test_accuracy"] > 0.8
    assert len(list(tmp_path.glob("classifier_digits_*.pt"))) == 1
    again = dataset_classifier(digits, epochs=20)  # loaded, not retrained: the same weights
    assert all(torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values()))
    real = dataset_sample_quality(digits.test, digits)
    ones = dataset_sample_quality(digits.test[:1].expand(200, -1), digits)
    assert real["classifier_score"] > 4 and real["frechet_distance"] < 1e-6  # the test split against itself
    assert ones["classifier_score"] < 1.2 and ones["frechet_distance"] > real["frechet_distance"]


def test_model_samples_take_a_label_when_the_model_needs_one(digits):
    model, _, _ = ppvae.build("aae", digits.x_dim, {"hidden": [16], "z_dim": 2, "prior": "mixture", "conditional": "decoder"}, seed=0)
    x = model_samples(model, 30, digits.x_dim, num_classes=10, chunk=7)
    assert x.shape == (30, digits.x_dim) and ((x >= 0) & (x <= 1)).all()


def test_evaluate_reports_parzen_and_classifier_scores_for_an_aae(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PPVAE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "aae"
    assert main(["train", "--model", "aae", "--dataset", "digits", "--epochs", "2", "--set", "hidden=[32]",
                 "--no-progress", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--model-samples", "500", "--limit", "100"]) == 0
    text = capsys.readouterr().out
    assert "Parzen" in text and "classifier score" in text and "not estimable" in text
    report = json.loads((run / "report.json").read_text())
    assert "Delta" in report["log_px_unavailable"]
    assert report["parzen"]["num_samples"] == 500 and report["parzen"]["mean"] < 0  # nats per 64-D digit
    assert report["sample_quality"]["num_images"] == 500 and report["scheme"] == "aae"
