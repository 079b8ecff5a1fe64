"""The adversarial autoencoder with a categorical latent (semi-supervised classification, clustering,
cluster heads): the labelled subset, the errors it is scored by, the supervised phase on its own,
every network training, only the subset's labels used, bit-identical resume, the CLI and bad input."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

import ppvae
import ppvae.checkpoint as checkpoint
from ppvae.cli import main
from ppvae.errors import ConfigError
from ppvae.schemes.base import StepContext
from ppvae.schemes.categorical import CategoricalAdversarialScheme
from ppvae.semisupervised import (clustering_error, confusion_matrix, labelled_subset, majority_labels,
                                  most_confident_labels)
from ppvae.train import TrainConfig

SMALL = {"hidden": [32, 32]}


# --- the labelled subset ----------------------------------------------------------------------


def test_the_labelled_subset_is_balanced_and_fixed_by_its_seed(digits):
    labels = digits.labels("train")
    idx = labelled_subset(labels, 100, seed=0)
    assert idx.numel() == 100 and idx.unique().numel() == 100
    assert torch.bincount(labels[idx], minlength=10).tolist() == [10] * 10
    assert torch.equal(idx, labelled_subset(labels, 100, seed=0))  # the same seed, the same subset
    assert not torch.equal(idx, labelled_subset(labels, 100, seed=1))
    assert idx.max() < digits.train.shape[0]  # indices into the training split
    assert torch.equal(labelled_subset(labels, "all"), torch.arange(labels.numel()))


def test_mnist_subsets_of_100_and_1000_labels_are_balanced(data_root):
    labels = ppvae.load_dataset("mnist", data_root).labels("train")
    for count in (100, 1000):
        idx = labelled_subset(labels, count, seed=0)
        assert torch.bincount(labels[idx], minlength=10).tolist() == [count // 10] * 10


def marked_data(n_train: int = 200) -> ppvae.Dataset:
    """Continuous toy data whose rows say where they come from: column 0 is the split (0 train,
    1 valid, 2 test), column 1 the row's index in it; the label is the index mod 2."""
    def split(code, n):
        x = torch.zeros(n, 4)
        x[:, 0], x[:, 1], x[:, 2:] = float(code), torch.arange(n).float(), torch.randn(n, 2)
        return x, torch.arange(n) % 2
    (tr, ytr), (va, yva), (te, yte) = split(0, n_train), split(1, 40), split(2, 40)
    return ppvae.Dataset("marked", tr, va, te, (1, 4), "normal", False, ytr, yva, yte)


def test_the_supervised_phase_reads_only_the_labelled_training_rows():
    """Spy on every input the supervised phase gives the guide: all rows are training rows of the
    subset (column 0 is 0, column 1 an index of the subset), none from the validation or test split,
    and the subset's labels are the ones it scores."""
    data = marked_data()
    model, guide, _ = ppvae.build("aae-categorical", 4, {**SMALL, "num_classes": 2, "labels": 20, "likelihood": "normal"}, seed=0)
    scheme = CategoricalAdversarialScheme(hidden=(8,))
    seen = []
    original = scheme.supervised_phase

    def spy(guide_, ctx, *batch):
        hook = guide_.net.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
        try:
            return original(guide_, ctx, *batch)
        finally:
            hook.remove()

    scheme.supervised_phase = spy
    ppvae.fit(model, guide, data, scheme=scheme, epochs=2, batch_size=50, progress=False)
    subset = labelled_subset(data.labels("train"), 20, num_classes=2, seed=0)
    rows = torch.cat(seen)
    assert rows.shape[0] == 2 * 4 * 20  # 2 epochs x 4 steps x the whole subset of 20
    assert (rows[:, 0] == 0).all()  # training rows only: no validation (1) or test (2) row
    assert set(rows[:, 1].long().tolist()) == set(subset.tolist())


def test_labels_outside_the_subset_change_nothing(digits):
    """Permuting every training label outside a given labelled subset leaves the run bit-identical:
    the scheme uses the subset's labels and nothing else (not the minibatch's). (The subset is
    passed as indices: drawing a balanced one reads every label, to know the classes.)"""
    subset = labelled_subset(digits.labels("train"), 50, seed=0)
    others = torch.ones(digits.labels("train").numel(), dtype=torch.bool)
    others[subset] = False
    scrambled = digits.labels("train").clone()
    g = torch.Generator().manual_seed(0)
    scrambled[others] = scrambled[others][torch.randperm(int(others.sum()), generator=g)]
    assert not torch.equal(scrambled, digits.labels("train"))
    weights = []
    for labels in (digits.labels("train"), scrambled):
        data = ppvae.Dataset("digits", digits.train, digits.valid, digits.test, digits.image_shape, digits.likelihood,
                             digits.dynamic_binarization, labels, digits.valid_labels, digits.test_labels)
        model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, {**SMALL, "labels": 50}, seed=0)
        ppvae.fit(model, guide, data, scheme=CategoricalAdversarialScheme(labels=subset), epochs=1, batch_size=100,
                  progress=False)
        weights.append([p.detach().clone() for p in [*model.parameters(), *guide.parameters()]])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


# --- the errors -------------------------------------------------------------------------------


def test_clustering_error_on_a_hand_made_assignment():
    # training members: cluster 0 -> labels 1, 1, 2 (majority 1); cluster 1 -> 0, 0 (0);
    # cluster 2 -> 2, 2, 2, 1 (2); cluster 3 has no member (-1: every test point in it is wrong)
    train_assign = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    train_labels = torch.tensor([1, 1, 2, 0, 0, 2, 2, 2, 1])
    assert majority_labels(train_assign, train_labels, 4).tolist() == [1, 0, 2, -1]
    test_assign = torch.tensor([0, 1, 2, 3, 0])
    test_labels = torch.tensor([1, 0, 1, 2, 2])
    # predicted labels 1, 0, 2, -1, 1: wrong at positions 2, 3 and 4
    error, mapping = clustering_error(train_assign, train_labels, test_assign, test_labels, 4)
    assert error == pytest.approx(3 / 5) and mapping.tolist() == [1, 0, 2, -1]
    # the paper's rule: each cluster takes the label of its most confident example
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert most_confident_labels(probs, torch.tensor([7, 3, 5])).tolist() == [7, 3]


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    m = confusion_matrix(torch.tensor([0, 1, 1, 2, 2, 2]), torch.tensor([0, 1, 2, 2, 2, 0]), 3)
    assert m.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]


# --- the supervised phase on its own -------------------------------------------------------------


class LinearGuide(nn.Module):
    """q(y | x) = softmax(W x + b) as a Delta, the convention of the categorical AAE's guide."""

    def __init__(self, x_dim: int = 2, num_classes: int = 2):
        super().__init__()
        self.linear = nn.Linear(x_dim, num_classes)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Delta(self.linear(x).softmax(-1)).to_event(1))


def test_the_supervised_phase_alone_learns_a_linearly_separable_toy():
    """Two Gaussian blobs split by the line x1 = x2; 20 labelled points (10 per class) and the
    supervised phase alone, stepped by hand, classify 400 held-out points without error."""
    g = torch.Generator().manual_seed(0)

    def blobs(n):
        y = torch.arange(n) % 2
        centre = torch.tensor([[2.0, -2.0], [-2.0, 2.0]])[y]
        return centre + 0.5 * torch.randn(n, 2, generator=g), y

    (xtr, ytr), (xte, yte) = blobs(300), blobs(400)
    data = ppvae.Dataset("blobs", xtr, xte[:10], xte, (1, 2), "normal", False, ytr, yte[:10], yte)
    torch.manual_seed(0)
    guide = LinearGuide()
    scheme = CategoricalAdversarialScheme(labels=20, label_seed=0, supervised_batch_size=10)
    scheme.num_classes = 2
    config = TrainConfig(batch_size=10)
    ctx = StepContext(config, 0, 0, 1, 300, torch.device("cpu"), torch.Generator().manual_seed(1), data)
    opt = torch.optim.Adam(guide.parameters(), lr=0.05)
    before = (guide.linear(xte).argmax(-1) != yte).float().mean()
    for step in range(200):
        ctx.step = step
        phase = scheme.supervised_phase(guide, ctx, *scheme.labelled_minibatch(ctx))
        opt.zero_grad()
        phase.loss.backward()
        opt.step()
    assert phase.group == "classifier" and phase.weight == 10
    with torch.no_grad():
        error = (guide.linear(xte).argmax(-1) != yte).float().mean()
    assert error == 0 and float(phase.value) < 0.05
    assert before > 0.1  # it learned: the untrained guide was far from it
    assert scheme.labelled_indices(data).numel() == 20


# --- the family trains ------------------------------------------------------------------------


def named(*modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


@pytest.mark.parametrize("options", [
    {"labels": 100},  # semi-supervised
    {"labels": 0, "num_classes": 16},  # unsupervised clustering
    {"labels": 50, "cluster_heads": True, "z_dim": 2},  # dimensionality reduction with cluster heads
    {"labels": 100, "labelled_reconstruction": True},  # the labelled minibatch also reconstructed
])
def test_every_network_trains(digits, options):
    """Every parameter of the decoder (and cluster heads), the encoder and both discriminators
    moves; every phase is logged; the validation metric follows the variant."""
    model, guide, config = ppvae.build("aae-categorical", digits.x_dim, {**SMALL, **options}, seed=0)
    D = {"y": nn.Sequential(nn.Linear(config.num_classes, 16), nn.ReLU(), nn.Linear(16, 1)),
         "z": nn.Sequential(nn.Linear(config.z_dim, 16), nn.ReLU(), nn.Linear(16, 1))}
    before = named(model, guide, *D.values())
    scheme = CategoricalAdversarialScheme(D)
    result = ppvae.fit(model, guide, digits, scheme=scheme, epochs=1, batch_size=50, progress=False)
    after = named(model, guide, *D.values())
    assert not [n for n in before if torch.equal(before[n], after[n])]
    assert ("cluster_heads" in dict(model.named_parameters())) == bool(options.get("cluster_heads"))
    last = result.history[-1]
    phases = {"reconstruction_loss", "discriminator_y_loss", "generator_y_loss", "discriminator_z_loss", "generator_z_loss",
              "discriminator_y_accuracy", "discriminator_z_accuracy"}
    assert phases <= set(last)
    assert ("supervised_loss" in last) == bool(options["labels"])
    assert ("labelled_reconstruction_loss" in last) == bool(options.get("labelled_reconstruction"))
    assert ("valid_error" if options["labels"] else "valid_cluster_error") in last


def test_default_discriminators_follow_the_models_width(digits):
    model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, {**SMALL, "labels": 0, "num_classes": 16}, seed=0)
    scheme = CategoricalAdversarialScheme()
    ppvae.fit(model, guide, digits, scheme=scheme, epochs=1, progress=False)
    assert set(scheme.discriminator) == {"y", "z"}
    assert [m.out_features for m in scheme.discriminator["y"] if isinstance(m, nn.Linear)] == [32, 32, 1]
    assert scheme.discriminator["y"][0].in_features == 16 and scheme.discriminator["z"][0].in_features == 10


def test_the_model_is_the_generative_story_and_the_reconstruction_reads_it(digits):
    """y ~ OneHotCategorical, z ~ N(0, I), x ~ p(x | y, z); the reconstruction term is the model's
    log p(x | y, z) at the guide's softmax y and code z, computed here by hand."""
    from ppvae.schemes.adversarial import reconstruction

    model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, SMALL, seed=0)
    x = digits.valid[:30]
    tr = poutine.trace(model).get_trace(x)
    assert isinstance(tr.nodes["y"]["fn"].base_dist if hasattr(tr.nodes["y"]["fn"], "base_dist") else tr.nodes["y"]["fn"],
                      dist.OneHotCategorical)
    assert tr.nodes["y"]["value"].sum(-1).eq(1).all() and tr.nodes["x"]["is_observed"]
    log_lik, _ = reconstruction(model, guide, x, "y", {})
    with torch.no_grad():
        probs, z = guide.encode(x)
        logits = model.decoder(torch.cat([probs, z], -1))
        hand = (x * logits - nn.functional.softplus(logits)).sum(-1)
    torch.testing.assert_close(log_lik.detach(), hand)
    draws = model.sample_prior(500)
    assert draws["y"].sum(-1).eq(1).all() and draws["z"].shape == (500, 10)


def test_the_labelled_reconstruction_reads_the_true_label(digits):
    """labelled_reconstruction: -log p(x | y = label, z) on the labelled minibatch, z the guide's code
    and y the one-hot *true* label (not the guide's softmax), on the autoencoder's group; by hand."""
    model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, {**SMALL, "labelled_reconstruction": True}, seed=0)
    x, labels = digits.train[:30], digits.labels("train")[:30]
    with torch.no_grad():  # a decoder that reads y strongly, so that which y it is given shows
        model.decoder[0].weight[:, :10] *= 50
    phase = CategoricalAdversarialScheme().labelled_reconstruction_phase(model, guide, x, labels)
    with torch.no_grad():
        probs, z = guide.encode(x)

        def nll(y):
            logits = model.decoder(torch.cat([y, z], -1))
            return -(x * logits - nn.functional.softplus(logits)).sum(-1).mean()

        hand, at_guides_y = nll(nn.functional.one_hot(labels, 10).float()), nll(probs)
    assert phase.group == "autoencoder" and phase.name == "labelled_reconstruction_loss"
    torch.testing.assert_close(phase.loss.detach(), hand)
    assert abs(float(hand - at_guides_y)) > 0.1  # the label matters: the guide's y gives another value
    phase.loss.backward()  # it trains the decoder and the style head of the encoder
    assert model.decoder[0].weight.grad.abs().sum() > 0 and guide.net[0].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="labelled_reconstruction"):
        CategoricalAdversarialScheme(labelled_reconstruction="yes")
    with pytest.raises(ConfigError, match="labelled_reconstruction"):
        ppvae.build("aae-categorical", 64, {"labelled_reconstruction": 1})


def test_input_noise_is_added_to_the_encoders_input_in_training_only(digits):
    """``input_noise`` = s: in train() mode the encoder's MLP reads x + s * eps, eps ~ N(0, I) from
    torch's generator (same seed, same draw: the heads equal the MLP on the noised input by hand);
    in eval() mode (validation, evaluation, classification) it reads x itself."""
    _, guide, _ = ppvae.build("aae-categorical", digits.x_dim, {**SMALL, "input_noise": 0.3}, seed=0)
    x = digits.train[:16]
    guide.train()
    torch.manual_seed(1)
    logits, z = guide.heads(x)
    torch.manual_seed(1)
    by_hand = guide.net(x + 0.3 * torch.randn_like(x))
    assert torch.equal(torch.cat([logits, z], -1), by_hand)
    assert not torch.allclose(by_hand, guide.net(x))
    guide.eval()
    assert torch.equal(torch.cat(guide.heads(x), -1), guide.net(x))
    assert torch.equal(guide.classify(x), guide.net(x)[:, :10].argmax(-1))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="input_noise"):
            ppvae.build("aae-categorical", digits.x_dim, {**SMALL, "input_noise": bad})


def test_the_cluster_head_penalty_is_the_papers_hinge():
    model, _, _ = ppvae.build("aae-categorical", 4, {**SMALL, "num_classes": 3, "labels": 0, "cluster_heads": True,
                                                       "z_dim": 2, "head_distance": 6.0})
    with torch.no_grad():
        model.cluster_heads.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]))
    # distances 3, 4, 5 against eta = 6: (6 - 3) + (6 - 4) + (6 - 5)
    assert float(model.penalty().detach()) == pytest.approx(6.0)
    with torch.no_grad():
        model.cluster_heads.mul_(3.0)  # distances 9, 12, 15: nothing to penalize
    assert float(model.penalty().detach()) == 0.0
    y = torch.eye(3)[[2, 0]]
    torch.testing.assert_close(model.embed(y, torch.ones(2, 2)), torch.tensor([[1.0, 13.0], [1.0, 1.0]]))


def test_resume_is_bit_identical(digits, tmp_path):
    """Semi-supervised with cluster heads: the labelled minibatches come from the run's checkpointed
    generator and the input noise from torch's (checkpointed) global one, so 1 + 2 epochs end where
    3 straight epochs do."""
    opts = {**SMALL, "labels": 50, "cluster_heads": True, "z_dim": 2, "input_noise": 0.2}

    def run(out, epochs, seed=0, resume=False):
        model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, opts, seed=seed)
        scheme = CategoricalAdversarialScheme()
        r = ppvae.fit(model, guide, digits, scheme=scheme, epochs=epochs, seed=1, batch_size=100, out_dir=out,
                      resume=resume, progress=False)
        return model, guide, scheme, r

    m1, g1, s1, straight = run(tmp_path / "a", 3)
    run(tmp_path / "b", 1)
    m2, g2, s2, resumed = run(tmp_path / "b", 3, seed=5, resume=True)
    for a, b in ((m1, m2), (g1, g2), (s1, s2)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    strip = [[{k: v for k, v in h.items() if k not in ppvae.train.TIMING_KEYS} for h in r.history] for r in (straight, resumed)]
    assert strip[0] == strip[1]
    assert set(checkpoint.load(tmp_path / "b" / "last.pt")["optimizers"]) == {
        "autoencoder", "discriminator_y", "generator_y", "discriminator_z", "generator_z", "classifier"}


def test_validation_and_test_errors_read_the_grey_levels(digits, tmp_path):
    """The classifier is scored on the grey levels, not on the fixed binary draw kept for the
    likelihood: here the binary validation and test images are blanked, so reading them would
    give one class for every image (~90% error)."""
    import json

    from ppvae.experiments.aae_categorical import evaluate
    from ppvae.semisupervised import class_probabilities, classification_error

    blank = ppvae.Dataset("digits", digits.train, torch.zeros_like(digits.valid), torch.zeros_like(digits.test),
                          digits.image_shape, digits.likelihood, True, digits.train_labels, digits.valid_labels,
                          digits.test_labels, valid_grey=digits.grey_levels("valid"), test_grey=digits.grey_levels("test"))
    model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, {"hidden": [64, 64], "labels": "all"}, seed=0)
    result = ppvae.fit(model, guide, blank, epochs=15, lr=1e-3, seed=1, batch_size=50, adam_betas=(0.5, 0.999),
                       out_dir=tmp_path / "semi-all", progress=False)
    guide.eval()
    for split in ("valid", "test"):
        from_grey = classification_error(class_probabilities(guide, digits.grey_levels(split)).argmax(-1), digits.labels(split))
        assert from_grey < 0.5
    assert result.history[-1]["valid_error"] < 0.5
    r = evaluate("semi-all", model, guide, blank, result.history, tmp_path / "semi-all", 1)
    assert r["error"] < 0.5 and r["error_binarized_test"] > 0.8
    assert json.loads((tmp_path / "semi-all" / "result.json").read_text())["error"] == r["error"]


# --- the command line and bad input --------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    ["labels=50"],
    ["labels=0", "num_classes=16"],
    ["labels=0", "num_classes=12", "cluster_heads=true", "z_dim=2"],
])
def test_the_three_variants_train_from_the_cli(tmp_path, capsys, settings):
    out = tmp_path / "run"
    sets = [a for s in ["hidden=[16]", *settings] for a in ("--set", s)]
    rc = main(["train", "--model", "aae-categorical", "--limit", "300", "--epochs", "1", *sets, "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "scheme aae-categorical" in printed
    ckpt = checkpoint.load(out / "last.pt")
    assert ckpt["scheme"]["name"] == "aae-categorical"
    assert ckpt["monitor"] == ("valid_error" if settings[0] != "labels=0" else "valid_reconstruction")
    assert (out / "samples.png").exists()


def test_bad_options_are_refused(digits):
    with pytest.raises(ConfigError, match="multiple of 10"):
        ppvae.build("aae-categorical", 64, {"labels": 105})
    with pytest.raises(ConfigError, match="'all'"):
        ppvae.build("aae-categorical", 64, {"labels": "most"})
    with pytest.raises(ConfigError, match="labels expects"):
        ppvae.build("aae-categorical", 64, {"labels": 1.5})
    with pytest.raises(ConfigError, match="num_classes"):
        ppvae.build("aae-categorical", 64, {"num_classes": 1})
    with pytest.raises(ConfigError, match="fewer than"):
        labelled_subset(digits.labels("train"), 1000)
    with pytest.raises(ConfigError, match="balanced"):
        labelled_subset(digits.labels("train"), 15)
    unlabelled = ppvae.Dataset("nolabels", digits.train, digits.valid, digits.test, digits.image_shape, digits.likelihood,
                               digits.dynamic_binarization)
    model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, {**SMALL, "labels": 50}, seed=0)
    with pytest.raises(ConfigError, match="needs labels"):
        ppvae.fit(model, guide, unlabelled, epochs=1, progress=False)
    x = digits.test[:10]
    with pytest.raises(ConfigError, match="'y' is a Delta"):  # no density: no importance-sampled log p(x)
        ppvae.log_likelihood(*ppvae.build("aae-categorical", digits.x_dim, SMALL)[:2], x, num_samples=4)
    with pytest.raises(ConfigError, match="several sites"):
        model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, SMALL, seed=0)
        ppvae.fit(model, guide, digits, scheme=CategoricalAdversarialScheme(nn.Linear(10, 1)), epochs=1, progress=False)


def test_the_experiment_writes_both_tables_and_resumes(tmp_path, capsys):
    """The experiment module on the offline digits: one epoch per run, both CSVs with the issue's
    columns; a second call with more epochs continues the runs instead of starting again."""
    import csv

    from ppvae.experiments.aae_categorical import main as experiment

    args = ["--dataset", "digits", "--hidden", "16", "--only", "semi-100,cluster-16", "--out", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    assert experiment([*args, "--epochs", "1"]) == 0
    semi = list(csv.reader(open(tmp_path / "results" / "aae_semisupervised.csv")))
    clusters = list(csv.reader(open(tmp_path / "results" / "aae_clustering.csv")))
    assert semi[0] == ["labels", "error", "epochs", "wall_s", "error_binarized_test"] and semi[1][0] == "100"
    assert semi[1][2] == "1" and 0.0 <= float(semi[1][4]) <= 1.0
    assert clusters[0] == ["clusters", "error", "epochs", "wall_s", "error_binarized_test"] and clusters[1][0] == "16"
    assert 0.0 <= float(semi[1][1]) <= 1.0 and float(clusters[1][3]) > 0
    assert experiment([*args, "--epochs", "2"]) == 0
    assert list(csv.reader(open(tmp_path / "results" / "aae_semisupervised.csv")))[1][2] == "2"
    lines = (tmp_path / "runs" / "semi-100" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # epoch 1 kept, epoch 2 added
    for name in ("semi-100", "cluster-16"):
        assert (tmp_path / "runs" / name / "confusion.png").exists() and (tmp_path / "runs" / name / "style_content.png").exists()


def test_the_experiments_dropout_and_style_size_reach_the_model(tmp_path):
    """--dropout and --z-dim build the semi-supervised/clustering AAEs with them (Dropout layers in
    encoder and decoder, the style's width), and the result records both."""
    import json

    from ppvae.experiments.aae_categorical import main as experiment

    out = tmp_path / "runs"
    assert experiment(["--dataset", "digits", "--hidden", "16", "--only", "cluster-16", "--out", str(out), "--epochs", "1",
                       "--dropout", "0.3", "--z-dim", "3", "--input-noise", "0.25"]) == 0
    ckpt = torch.load(out / "cluster-16" / "last.pt", weights_only=False)
    opts = ckpt["meta"]["model_options"]
    assert (opts["dropout"], opts["z_dim"], opts["input_noise"]) == (0.3, 3, 0.25)
    model, guide, _ = ppvae.build("aae-categorical", 64, opts)
    assert sum(isinstance(m, nn.Dropout) for m in [*model.modules(), *guide.modules()]) == 2
    assert guide.net[-1].out_features == 16 + 3 and guide.noise.std == 0.25
    settings = json.loads((out / "cluster-16" / "result.json").read_text())["settings"]
    assert (settings["dropout"], settings["z_dim"], settings["input_noise"]) == (0.3, 3, 0.25)
    with pytest.raises(ConfigError, match="dropout"):
        ppvae.build("aae-categorical", 64, {"dropout": -0.5})
