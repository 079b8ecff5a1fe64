"""``ppvae.fit``: every parameter trains, resuming is bit-exact, divergence and early stopping are
handled, checkpoints are atomic; and the schedules in ``ppvae.schedules``."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppvae
import ppvae.checkpoint as checkpoint
from ppvae.errors import ConfigError, TrainingDivergedError
from ppvae.guides.vae import GaussianEncoder
from ppvae.models.vae import VAE, VAEConfig
from ppvae.schedules import burda_stages, kl_weight, lr_factor

SMALL = {1: VAEConfig(z_dims=(4,), hidden=((32,),)), 2: VAEConfig(z_dims=(8, 4), hidden=((32,), (16,)))}


def build_pair(x_dim: int, layers: int, seed: int = 0, cls=VAE):
    torch.manual_seed(seed)
    return cls(x_dim, SMALL[layers]), GaussianEncoder(x_dim, SMALL[layers])


def named_params(model, guide) -> dict[str, torch.Tensor]:
    return {
        **{f"model.{n}": p.detach().clone() for n, p in model.named_parameters()},
        **{f"guide.{n}": p.detach().clone() for n, p in guide.named_parameters()},
    }


# --- 5. every parameter trains ----------------------------------------------------------------


@pytest.mark.parametrize("objective", ["elbo", "elbo-analytic", "iwae"])
@pytest.mark.parametrize("layers", [1, 2])
def test_every_parameter_changes(digits, layers, objective):
    model, guide = build_pair(digits.x_dim, layers)
    before = named_params(model, guide)
    assert len(before) == (4 + 4 if layers == 1 else 8 + 8)  # weights and biases of every Linear
    result = ppvae.fit(model, guide, digits, objective=objective, num_particles=2, epochs=1, batch_size=100, lr=1e-2, progress=False)
    after = named_params(model, guide)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"{objective}, {layers} layer(s): parameters that did not train: {unchanged}"
    assert all(torch.isfinite(p).all() for p in after.values())
    (metrics,) = result.history
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics[f"valid_{objective}"])
    assert result.best_valid == metrics[f"valid_{objective}"]


def test_training_improves_the_validation_bound(digits):
    model, guide = build_pair(digits.x_dim, 1)
    valid = digits.valid
    torch.manual_seed(0)
    start = ppvae.get_objective("elbo", 10).bound(model, guide, valid).mean()
    result = ppvae.fit(model, guide, digits, objective="elbo-analytic", epochs=3, lr=1e-2, progress=False)
    assert result.history[-1]["valid_elbo-analytic"] > start + 5.0  # nats per datapoint
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


# --- 6. resume equals uninterrupted; atomic checkpoints ---------------------------------------

RESUME_SETTINGS = dict(
    objective="iwae", num_particles=3, batch_size=100, lr=3e-3, lr_schedule="exponential", lr_gamma=0.5,
    kl_warmup_epochs=3, seed=7, progress=False,
)


def test_resume_equals_uninterrupted(digits, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    model, guide = build_pair(digits.x_dim, 2)
    full = ppvae.fit(model, guide, digits, epochs=4, out_dir=a, **RESUME_SETTINGS)

    first, first_guide = build_pair(digits.x_dim, 2)
    ppvae.fit(first, first_guide, digits, epochs=2, out_dir=b, **RESUME_SETTINGS)
    assert not torch.equal(first.decoder[0].weight, model.decoder[0].weight)  # really only 2 epochs
    fresh, fresh_guide = build_pair(digits.x_dim, 2, seed=123)  # a different init: all from the checkpoint
    resumed = ppvae.fit(fresh, fresh_guide, digits, epochs=4, out_dir=b, resume=True, **RESUME_SETTINGS)

    want, got = named_params(model, guide), named_params(fresh, fresh_guide)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name

    def lines(path):
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ppvae.train.TIMING_KEYS} for r in rows]

    assert len(lines(b)) == 4
    assert lines(b) == lines(a)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.best_valid == full.best_valid
    # the schedules are functions of the epoch: recorded as such, and restored on resume
    assert [r["lr"] for r in lines(a)] == pytest.approx([3e-3 * 0.5**e for e in range(4)])
    assert [r["kl_weight"] for r in lines(a)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])

    for run in (a, b):
        assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
        ckpt = checkpoint.load(run / "last.pt")
        assert ckpt["epoch"] == 4
        assert (run / "best.pt").exists()
        for name, value in fresh.state_dict().items():
            assert torch.equal(ckpt["model_state"][name], value)


def test_save_atomic_keeps_the_previous_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"epoch": 1, "w": torch.arange(3.0)}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left
    ckpt = checkpoint.load(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["w"], torch.arange(3.0))
    with pytest.raises(ppvae.CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ppvae.CheckpointError, match="could not read"):
        checkpoint.load(tmp_path / "junk.pt")


def test_resume_without_a_checkpoint_is_an_error(digits, tmp_path):
    model, guide = build_pair(digits.x_dim, 1)
    with pytest.raises(ppvae.CheckpointError, match="no checkpoint"):
        ppvae.fit(model, guide, digits, epochs=1, out_dir=tmp_path / "none", resume=True, progress=False)
    with pytest.raises(ConfigError, match="out_dir"):
        ppvae.fit(model, guide, digits, epochs=1, resume=True, progress=False)


# --- 7. divergence ----------------------------------------------------------------------------


class PoisonableVAE(VAE):
    """A VAE whose decoder output turns NaN once ``poisoned`` is set (as a diverged network's does)."""

    poisoned = False

    def likelihood(self, z1):
        if self.poisoned:
            return super().likelihood(z1 * torch.tensor(math.nan))
        return super().likelihood(z1)


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    model, guide = build_pair(digits.x_dim, 1, cls=PoisonableVAE)

    def poison_after_epoch_1(metrics):
        if metrics["epoch"] == 1:
            model.poisoned = True

    with pytest.raises(TrainingDivergedError) as e:
        ppvae.fit(model, guide, digits, epochs=3, out_dir=tmp_path, callbacks=[poison_after_epoch_1], progress=False)
    message = str(e.value)
    assert "nan" in message and "epoch 2, step 1" in message
    assert f"last good checkpoint {tmp_path / 'last.pt'} (epoch 1) is kept" in message
    ckpt = checkpoint.load(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1
    for state in (ckpt["model_state"], ckpt["guide_state"]):
        assert state and all(torch.isfinite(v).all() for v in state.values())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    # the checkpoint is usable: a fresh pair resumes from it (and trains on, unpoisoned)
    fresh, fresh_guide = build_pair(digits.x_dim, 1, seed=5)
    result = ppvae.fit(fresh, fresh_guide, digits, epochs=2, out_dir=tmp_path, resume=True, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_nan_in_the_first_epoch_says_no_checkpoint_was_written(digits, tmp_path):
    model, guide = build_pair(digits.x_dim, 1, cls=PoisonableVAE)
    model.poisoned = True
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 1; no checkpoint was written yet"):
        ppvae.fit(model, guide, digits, epochs=2, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()


def test_huge_learning_rate_diverges(digits):
    model, guide = build_pair(digits.x_dim, 1)
    with pytest.raises(TrainingDivergedError, match="Lower the learning rate"):
        ppvae.fit(model, guide, digits, epochs=3, lr=1e6, objective="elbo", progress=False)


# --- 11. early stopping -----------------------------------------------------------------------


class ShiftModel(nn.Module):
    """x ~ N(b, I) with a latent z ~ N(0, 1) that x does not depend on. With the prior as guide the
    latent terms cancel exactly, so every bound equals log N(x; b, I): no Monte Carlo noise, and
    the validation bound is a deterministic function of b."""

    def __init__(self, x_dim: int):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(x_dim))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
            pyro.sample("x", dist.Normal(self.b.expand(x.shape), 1.0).to_event(1), obs=x)


def prior_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))


def shifted_data(valid_mean: float) -> ppvae.Dataset:
    g = torch.Generator().manual_seed(0)
    train = 1.0 + 0.1 * torch.randn(50, 3, generator=g)
    valid = valid_mean + 0.1 * torch.randn(20, 3, generator=g)
    return ppvae.Dataset("shift", train, valid, valid.clone(), (1, 3), "normal", False)


def test_early_stopping_stops_when_the_valid_bound_stops_improving(tmp_path):
    """Training pulls b from 0 towards the training mean (1) and away from the validation mean
    (0): the validation bound is best after epoch 1 and only gets worse."""
    model = ShiftModel(3)
    result = ppvae.fit(model, prior_guide, shifted_data(0.0), objective="elbo", epochs=10, batch_size=50, lr=0.05,
                       early_stopping_patience=1, out_dir=tmp_path, progress=False)
    assert result.stopped_early
    assert len(result.history) == 2
    v1, v2 = (h["valid_elbo"] for h in result.history)
    assert v2 < v1 and result.best_valid == v1
    best = checkpoint.load(tmp_path / "best.pt")
    assert best["epoch"] == 1 and checkpoint.load(tmp_path / "last.pt")["epoch"] == 2
    # the model is left at its best epoch
    assert torch.equal(model.b.detach(), best["model_state"]["b"])
    expected = dist.Normal(model.b.detach(), 1.0).to_event(1).log_prob(shifted_data(0.0).valid).mean()
    assert v1 == pytest.approx(expected.item(), abs=1e-5)


def test_patience_does_not_count_kl_warmup_epochs(tmp_path):
    """The same worsening validation bound, with a 4-epoch KL warm-up: epochs 2 and 3 (inside the
    warm-up) do not count against patience, so the run stops after epoch 4, not 2."""
    model = ShiftModel(3)
    result = ppvae.fit(model, prior_guide, shifted_data(0.0), objective="elbo", epochs=10, batch_size=50, lr=0.05,
                       early_stopping_patience=1, kl_warmup_epochs=4, out_dir=tmp_path, progress=False)
    assert result.stopped_early and len(result.history) == 4
    assert checkpoint.load(tmp_path / "best.pt")["epoch"] == 1


def test_no_early_stop_while_the_valid_bound_improves(tmp_path):
    model = ShiftModel(3)
    result = ppvae.fit(model, prior_guide, shifted_data(1.0), objective="elbo", epochs=3, batch_size=50, lr=0.05,
                       early_stopping_patience=1, out_dir=tmp_path, progress=False)
    assert not result.stopped_early and len(result.history) == 3
    values = [h["valid_elbo"] for h in result.history]
    assert values == sorted(values) and checkpoint.load(tmp_path / "best.pt")["epoch"] == 3


# --- 12. schedules ----------------------------------------------------------------------------


def burda_stage(epoch: int) -> int:
    """Stage i covers epochs (3^i - 1)/2 ... (3^(i+1) - 1)/2 - 1: computed independently of the code."""
    i = 0
    while i < 7 and 3 ** (i + 1) <= 2 * epoch + 1:
        i += 1
    return i


def test_burda_schedule():
    assert burda_stages() == [1, 3, 9, 27, 81, 243, 729, 2187]
    assert sum(burda_stages()) == 3280
    for epoch in range(3300):
        assert lr_factor("iwae", epoch, 3280) == pytest.approx(10 ** (-burda_stage(epoch) / 7)), epoch
    # the stage boundaries, spelled out
    assert lr_factor("iwae", 0, 3280) == 1.0
    assert lr_factor("iwae", 1, 3280) == lr_factor("iwae", 3, 3280) == pytest.approx(10 ** (-1 / 7))
    assert lr_factor("iwae", 4, 3280) == pytest.approx(10 ** (-2 / 7))
    assert lr_factor("iwae", 12, 3280) == pytest.approx(10 ** (-2 / 7))
    assert lr_factor("iwae", 13, 3280) == pytest.approx(10 ** (-3 / 7))
    assert lr_factor("iwae", 3279, 3280) == pytest.approx(10 ** (-7 / 7))
    # a scaled-down schedule: stages of max(1, round(3^i * scale)) epochs
    assert burda_stages(0.1) == [1, 1, 1, 3, 8, 24, 73, 219]
    assert [lr_factor("iwae", e, 10, scale=0.1) for e in (0, 1, 2, 3, 5, 6, 13, 14)] == pytest.approx(
        [10 ** (-i / 7) for i in (0, 1, 2, 3, 3, 4, 4, 5)]
    )


def test_other_lr_schedules():
    assert [lr_factor("constant", e, 5) for e in range(5)] == [1.0] * 5
    assert [lr_factor("exponential", e, 5, gamma=0.9) for e in range(4)] == pytest.approx([1, 0.9, 0.81, 0.729])
    assert [lr_factor("cosine", e, 4) for e in range(5)] == pytest.approx([1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 - math.cos(math.pi / 4)) / 2, 0])
    with pytest.raises(ConfigError, match="constant, iwae, exponential, cosine"):
        lr_factor("step", 0, 5)
    with pytest.raises(ConfigError, match="lr_schedule"):
        ppvae.TrainConfig(lr_schedule="step")


def test_kl_weight_is_linear():
    for t in (0.0, 0.25, 1.0, 2.5, 3.999):
        assert kl_weight(t, 4) == pytest.approx(t / 4)
    assert kl_weight(4, 4) == kl_weight(9, 4) == 1.0
    assert kl_weight(0, 0) == kl_weight(3, 0) == 1.0


def test_fit_records_the_lr_schedule(digits):
    model, guide = build_pair(digits.x_dim, 1)
    result = ppvae.fit(model, guide, digits, epochs=5, lr=1e-3, lr_schedule="iwae", schedule_scale=1.0, batch_size=200, progress=False)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3 * 10 ** (-burda_stage(e) / 7) for e in range(5)])
    assert [h["kl_weight"] for h in result.history] == [1.0] * 5
