"""The training-scheme contract (``ppvae.schemes``) as the trainer runs it: several groups and
optimizers, ordered phases, per-epoch phases, labels, the monitored metric, NaN guards before any
step, checkpoints of every network and optimizer, and bit-identical resume."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppvae
import ppvae.checkpoint as checkpoint
from ppvae.errors import ConfigError, TrainingDivergedError
from ppvae.schemes import BoundScheme, ParamGroup, Phase, Scheme


class Gaussian(nn.Module):
    """x ~ N(b, I) with an ignored latent: every bound is log N(x; b, I) (no Monte Carlo noise)."""

    def __init__(self, x_dim: int = 3):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(x_dim))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
            pyro.sample("x", dist.Normal(self.b.expand(x.shape), 1.0).to_event(1), obs=x)


class PriorGuide(nn.Module):
    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))


def labelled_data(n: int = 60, seed: int = 0) -> ppvae.Dataset:
    """Continuous 3-D data whose label is 1 where the first coordinate is positive."""
    g = torch.Generator().manual_seed(seed)
    x = [2.0 * torch.randn(m, 3, generator=g) + 1.0 for m in (n, 20, 20)]
    y = [(s[:, 0] > 1.0).long() for s in x]
    return ppvae.Dataset("toy", *x, (1, 3), "normal", False, *y)


class CriticScheme(Scheme):
    """A two-group scheme: the bound over the pair, then a logistic 'critic' the scheme owns that
    predicts the label from x (phase 2), then a per-epoch phase on the critic alone."""

    name = "critic"
    mode = "min"

    def __init__(self, poison_epoch_phase: bool = False, check_labels: bool = True):
        super().__init__()
        self.poison_epoch_phase, self.check_labels = poison_epoch_phase, check_labels
        self.seen_b: list[torch.Tensor] = []

    @property
    def monitor(self) -> str:
        return "valid_critic_loss"

    def setup(self, model, guide, x, config):
        self.critic = nn.Linear(x.shape[-1], 1)

    def param_groups(self, model, guide, x, config):
        return {"pair": ParamGroup.from_config(model.parameters(), config),
                "critic": ParamGroup(list(self.critic.parameters()), lr=0.2, lr_schedule="exponential")}

    def step(self, model, guide, x, y, ctx):
        if self.check_labels:
            assert y is not None and torch.equal(y, (x[:, 0] > 1.0).long())
        bound = ppvae.get_objective("elbo").loss(model, guide, x, num_data=ctx.num_data)
        yield Phase("bound_loss", "pair", bound, value=bound.detach() / ctx.num_data, weight=x.shape[0])
        self.seen_b.append(model.b.detach().clone())  # after the pair's phase: its step is visible
        critic = nn.functional.binary_cross_entropy_with_logits(self.critic(x).squeeze(-1), y.float())
        yield Phase("critic_loss", "critic", critic, weight=x.shape[0], metrics={"critic_bias": self.critic.bias.detach()[0]})

    def epoch_phases(self, model, guide, ctx):
        x = ctx.data.train
        loss = nn.functional.binary_cross_entropy_with_logits(self.critic(x).squeeze(-1), ctx.data.train_labels.float())
        if self.poison_epoch_phase:
            loss = loss * torch.tensor(math.nan)
        yield Phase("critic_epoch_loss", "critic", loss)

    @torch.no_grad()
    def validate(self, model, guide, x, ctx):
        y = ctx.data.valid_labels.float()
        return {self.monitor: float(nn.functional.binary_cross_entropy_with_logits(self.critic(x).squeeze(-1), y))}


SETTINGS = dict(epochs=3, batch_size=16, lr=0.05, seed=3, progress=False)


def critic_run(tmp_path=None, scheme=None, seed: int = 0, **kw):
    torch.manual_seed(seed)
    model, guide = Gaussian(), PriorGuide()
    scheme = scheme or CriticScheme()
    result = ppvae.fit(model, guide, labelled_data(), scheme=scheme, out_dir=tmp_path, **{**SETTINGS, **kw})
    return model, scheme, result


def test_every_phase_is_logged_and_every_group_steps(tmp_path):
    model, scheme, result = critic_run(tmp_path)
    last = result.history[-1]
    assert {"bound_loss", "critic_loss", "critic_bias", "critic_epoch_loss", "valid_critic_loss", "lr", "critic_lr"} <= set(last)
    # each group its own learning rate and schedule: the critic's decays by gamma per epoch
    assert [h["critic_lr"] for h in result.history] == pytest.approx([0.2 * 0.99**e for e in range(3)])
    assert all(h["lr"] == 0.05 for h in result.history)
    # the critic learned: its loss fell from chance (log 2)
    assert last["critic_loss"] < math.log(2) - 0.1
    # the bound's phase moved b towards the training mean before the critic's phase ran
    assert not torch.equal(scheme.seen_b[0], torch.zeros(3))
    ckpt = checkpoint.load(tmp_path / "last.pt")
    assert set(ckpt["optimizers"]) == {"pair", "critic"}
    assert ckpt["optimizers"]["critic"]["state"]  # Adam moments of the critic were saved
    assert torch.equal(ckpt["scheme_state"]["critic.weight"], scheme.critic.weight)
    assert ckpt["scheme"] == {"name": "critic"} and ckpt["monitor"] == "valid_critic_loss"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"critic_loss"' in lines[-1]


def test_the_monitored_metric_is_minimized_when_the_scheme_says_so(tmp_path):
    _, _, result = critic_run(tmp_path)
    values = [h["valid_critic_loss"] for h in result.history]
    assert result.best_valid == min(values)
    assert checkpoint.load(tmp_path / "best.pt")["epoch"] == 1 + values.index(min(values))


def test_resume_of_a_multi_group_scheme_is_bit_identical(tmp_path):
    model, scheme, straight = critic_run(tmp_path / "a")
    critic_run(tmp_path / "b", epochs=1)
    resumed_model, resumed_scheme, resumed = critic_run(tmp_path / "b", seed=9, resume=True)
    assert torch.equal(model.b, resumed_model.b)
    assert torch.equal(scheme.critic.weight, resumed_scheme.critic.weight)
    drop = [[{k: v for k, v in h.items() if k not in ppvae.train.TIMING_KEYS} for h in r.history] for r in (straight, resumed)]
    assert drop[0] == drop[1]
    opt = [checkpoint.load(tmp_path / r / "last.pt")["optimizers"]["critic"]["state"] for r in "ab"]
    for i in opt[0]:
        for key in opt[0][i]:
            assert torch.equal(opt[0][i][key], opt[1][i][key])


def test_a_nan_in_a_per_epoch_phase_stops_before_any_step(tmp_path):
    with pytest.raises(TrainingDivergedError, match="critic_epoch_loss.*no checkpoint was written yet"):
        critic_run(tmp_path, scheme=CriticScheme(poison_epoch_phase=True))
    assert not (tmp_path / "last.pt").exists()


class NaNGradScheme(BoundScheme):
    """The bound, plus from epoch ``at`` a term with a finite value and a NaN gradient."""

    def __init__(self, at: int):
        super().__init__("elbo")
        self.at = at

    def step(self, model, guide, x, y, ctx):
        for phase in super().step(model, guide, x, y, ctx):
            if ctx.epoch >= self.at:
                b = model.b
                phase.loss = phase.loss + torch.where(b > 1e9, torch.sqrt(-b), torch.zeros_like(b)).sum()
            yield phase


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_nan_gradients_never_reach_the_networks_or_the_checkpoint(tmp_path, grad_clip):
    torch.manual_seed(0)
    model = Gaussian()
    with pytest.raises(TrainingDivergedError) as e:
        ppvae.fit(model, PriorGuide(), labelled_data(), scheme=NaNGradScheme(at=1), out_dir=tmp_path,
                  grad_clip=grad_clip, **SETTINGS)
    # with clipping the gradient norm is checked before the step; without, the epoch's end check
    assert ("gradient norm" in str(e.value)) == (grad_clip is not None)
    ckpt = checkpoint.load(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and torch.isfinite(ckpt["model_state"]["b"]).all()
    # the in-memory model is back at the last good epoch, not NaN
    assert torch.equal(model.b.detach(), ckpt["model_state"]["b"])


def test_a_nan_validation_metric_stops_training(tmp_path):
    class NaNValid(CriticScheme):
        def validate(self, model, guide, x, ctx):
            return {self.monitor: math.nan if ctx.epoch == 1 else 0.5}

    with pytest.raises(TrainingDivergedError, match="validation metric valid_critic_loss became nan"):
        critic_run(tmp_path, scheme=NaNValid())
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == 1


def test_a_phase_on_an_undeclared_group_is_an_error():
    class Wrong(CriticScheme):
        def step(self, model, guide, x, y, ctx):
            yield Phase("oops", "discriminator", self.critic(x).sum())

    with pytest.raises(ConfigError, match="group 'discriminator'.*groups: pair, critic"):
        critic_run(scheme=Wrong())


def test_unknown_scheme_names_are_refused():
    with pytest.raises(ConfigError, match="unknown training scheme 'adversarial'"):
        ppvae.fit(Gaussian(), PriorGuide(), labelled_data(), scheme="adversarial", epochs=1, progress=False)


def test_the_iop_model_picks_its_two_phase_scheme_by_default():
    from ppvae.schemes import DensityRatioScheme, get_scheme

    model, _, _ = ppvae.build("iop", 64, {"z_dims": [2], "hidden": [[8]], "ratio_hidden": [8]})
    assert isinstance(get_scheme(None, model), DensityRatioScheme)
    assert type(get_scheme("bound", model)) is BoundScheme
