"""The binarization-cost reference: a plain MLP scored on a test set's grey levels and on its
fixed binary draw, reproducible from its seed."""

from __future__ import annotations

import torch

import ppvae
from ppvae.experiments.mlp_binarization import main, train


def test_the_two_columns_read_the_grey_levels_and_the_binary_draw(digits):
    # The binary test images blanked: the grey-level column must stay a classifier's error, the
    # binarized one becomes that of a constant prediction.
    blank = ppvae.Dataset("digits", digits.train, digits.valid, torch.zeros_like(digits.test), digits.image_shape,
                          digits.likelihood, True, digits.train_labels, digits.valid_labels, digits.test_labels,
                          valid_grey=digits.grey_levels("valid"), test_grey=digits.grey_levels("test"))
    history = train(blank, epochs=5, hidden=(64,), lr=3e-3, gamma=0.95, batch_size=50, seed=0, report=lambda s: None)
    assert history[-1]["grey"] < 0.2 and history[-1]["binarized"] > 0.8
    again = train(blank, epochs=5, hidden=(64,), lr=3e-3, gamma=0.95, batch_size=50, seed=0, report=lambda s: None)
    assert again == history  # the same seed gives the same numbers
    grey = train(blank, epochs=5, hidden=(64,), lr=3e-3, gamma=0.95, batch_size=50, seed=0, grey_training=True,
                 report=lambda s: None)
    assert grey != history and grey[-1]["grey"] < 0.2  # another input, another run; it learns too


def test_the_command_prints_both_errors(capsys):
    assert main(["--dataset", "digits", "--epochs", "2", "--hidden", "16"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2: test error grey levels" in out and "gap" in out
