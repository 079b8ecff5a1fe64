"""MNIST classifier score and Frechet distance: the formulas against closed forms, and a small
classifier trained on a slice of MNIST into a temporary cache folder (the full one is slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppvae.cache import cache_dir
from ppvae.errors import ConfigError
from ppvae.sample_quality import (
    accuracy,
    classifier_score,
    classify,
    frechet_distance,
    frechet_distance_from_stats,
    mnist_classifier,
    mnist_images,
    mnist_labels,
    sample_quality,
)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PPVAE_CACHE", str(tmp_path / "a" / "b"))
    assert cache_dir() == tmp_path / "a" / "b" and cache_dir().is_dir()
    monkeypatch.setenv("PPVAE_CACHE", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "ppvae"


def test_classifier_score_one_class_is_one():
    probs = torch.zeros(50, 10)
    probs[:, 3] = 1.0
    assert classifier_score(probs) == 1.0


def test_classifier_score_balanced_one_hot_is_the_number_of_classes():
    probs = torch.eye(10).repeat(7, 1)  # 70 images, 7 per class
    assert classifier_score(probs) == pytest.approx(10.0, rel=1e-12)
    mean, std = classifier_score(probs, splits=7, return_std=True)  # each split: one per class
    assert mean == pytest.approx(10.0, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_classifier_score_identical_rows_is_one_and_refuses_non_probabilities():
    row = torch.softmax(torch.randn(10, generator=torch.Generator().manual_seed(0)), 0)
    assert classifier_score(row.repeat(20, 1)) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ConfigError, match="probability"):
        classifier_score(torch.rand(5, 10) + 0.1)


def _with_moments(mu, cov, n, seed):
    """n points whose sample mean and unbiased sample covariance are exactly ``mu`` and ``cov``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mu)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample cov = I
    return mu + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_of_a_set_with_itself_is_zero():
    feats = torch.randn(500, 16, generator=torch.Generator().manual_seed(1))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(2)
    d = 8
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
    closed_form = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    a = _with_moments(mu1, np.diag(s1), 400, 3)
    b = _with_moments(mu2, np.diag(s2), 300, 4)
    assert frechet_distance(a, b) == pytest.approx(closed_form, rel=1e-9)
    assert frechet_distance_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(
        closed_form, rel=1e-12
    )


def test_frechet_distance_for_full_covariances_against_a_rotated_closed_form():
    """Rotating both Gaussians by the same orthogonal Q changes nothing: the full-covariance path
    (through scipy's sqrtm) must reproduce the diagonal closed form."""
    rng = np.random.default_rng(5)
    d = 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
    closed_form = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance_from_stats(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert got == pytest.approx(closed_form, rel=1e-9)


def test_small_classifier_trained_into_a_temporary_cache(data_root, tmp_path, monkeypatch):
    """A classifier trained on 6,000 images for 3 epochs (the whole test: ~26 s of CPU): the real
    test images get a classifier score near 10, 500 copies of one image a score of 1, and the
    second call loads it from the cache."""
    monkeypatch.setenv("PPVAE_CACHE", str(tmp_path))
    model = mnist_classifier(data_root, num_train=6000, epochs=3, progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["mnist_classifier-n6000-e3.pt"]  # never the default file name
    x, y = mnist_images("test", data_root)[:1000], mnist_labels("test", data_root)[:1000]
    assert accuracy(model, x, y) > 0.9
    assert model.info["test_accuracy"] > 0.9 and model.info["test_accuracy_binarized"] > 0.9
    probs, feats = classify(model, x)
    assert probs.shape == (1000, 10) and feats.shape == (1000, 128)
    assert classifier_score(probs) > 7.5  # 8.40 measured (the full classifier: 9.76)
    assert classifier_score(classify(model, x[:1].repeat(500, 1))[0]) < 1.5

    again = mnist_classifier(data_root, num_train=6000, epochs=3, progress=False)
    assert again.info["id"] == model.info["id"]  # loaded, not retrained

    report = sample_quality(x, data_root, classifier=model)
    assert report["num_images"] == 1000 and report["reference"] == "test"
    assert report["reference_classifier_score"] > 8  # all 10,000 test images: 8.75 measured
    assert (tmp_path / "mnist_reference_test.pt").exists()
    one = sample_quality(x[:1].repeat(500, 1), data_root, classifier=model)
    assert one["classifier_score"] < 1.5
    # 1,000 real images against all 10,000: ~10; 500 copies of one image: ~2,000
    assert one["frechet_distance"] > 50 * report["frechet_distance"] > 0
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        sample_quality(x * 255, data_root, classifier=model)


@pytest.mark.slow
def test_full_classifier_reaches_99_percent(data_root):
    """The real cached classifier (trained on first use: ~100 s of CPU, minutes of wall time).
    Measured: 99.38% on the grey test images, 98.98% on the binarized ones, score 9.76."""
    model = mnist_classifier(data_root, progress=False)
    x, y = mnist_images("test", data_root), mnist_labels("test", data_root)
    assert accuracy(model, x, y) >= 0.99
    xb = mnist_images("test", data_root, binarized=True)
    assert accuracy(model, xb, y) >= 0.985
    assert classifier_score(classify(model, x)[0]) > 9.5
    assert math.isfinite(sample_quality(x[:2000], data_root)["frechet_distance"])
