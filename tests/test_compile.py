"""``TrainConfig.compile``: the bound's loss under ``torch.compile`` is the eager loss.

Each test compiles small networks (inductor, C++ on the CPU): seconds each, a first compile in a
fresh process up to a minute.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppvae
from ppvae.compile import compiled_loss
from ppvae.errors import ConfigError

SMALL = {"z_dims": [4], "hidden": [[16]]}


def _pair(seed: int = 0, x_dim: int = 64):
    model, guide, _ = ppvae.build("vae", x_dim, SMALL, seed=seed)
    return model, guide


def _batch(n: int = 20, x_dim: int = 64) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, x_dim), 0.3), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("objective, k", [("elbo-analytic", 1), ("iwae", 3)])
def test_the_compiled_loss_draws_the_same_numbers_and_has_the_same_gradients(objective, k):
    model, guide = _pair()
    x = _batch()
    obj = ppvae.get_objective(objective, k)
    with pyro.validation_enabled(False):
        compiled = compiled_loss(obj, model, guide, x)
        assert compiled is not None
        values, grads = [], []
        for run in ("eager", "compiled"):
            torch.manual_seed(11)
            for p in list(model.parameters()) + list(guide.parameters()):
                p.grad = None
            loss = obj.loss(model, guide, x, num_data=1000) if run == "eager" else compiled(model, guide, x, 1000)
            loss.backward()
            values.append(loss.detach())
            grads.append([p.grad.clone() for p in list(model.parameters()) + list(guide.parameters())])
            # the next draw must also agree: the compiled graph consumed as many numbers as eager
            values.append(torch.randn(3))
    assert torch.allclose(values[0], values[2], rtol=1e-5)  # same draws, up to fused rounding
    assert torch.equal(values[1], values[3])  # the generator is left in the same state
    for a, b in zip(grads[0], grads[1]):  # fused kernels sum in another order: rounding relative to the largest
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max()))


def test_fit_with_compile_trains_as_the_eager_fit_does():
    data = ppvae.load_dataset("digits", limit=300)
    params = []
    for compile in (False, True):
        model, guide, _ = ppvae.build("vae", data.x_dim, SMALL, seed=0)
        # a KL warm-up over the first epoch: eager while its weight is below 1, compiled after
        result = ppvae.fit(model, guide, data, epochs=2, batch_size=64, kl_warmup_epochs=1, compile=compile,
                           progress=False, seed=0)
        params.append([p.detach().clone() for p in list(model.parameters()) + list(guide.parameters())])
        losses = [h["train_loss"] for h in result.history]
        if compile:
            assert losses == pytest.approx(eager_losses, rel=1e-5)
        eager_losses = losses
    for a, b in zip(*params):
        assert torch.allclose(a, b, atol=1e-4)


def test_compile_refuses_a_pair_that_is_not_a_story_module():
    enc, dec = nn.Linear(6, 4), nn.Linear(2, 6)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), x.new_ones(2)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        loc, raw = enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    x = _batch(10, 6)
    assert compiled_loss(ppvae.get_objective("elbo"), model, guide, x) is None
    with pytest.raises(ConfigError, match="StoryModule"):
        ppvae.fit(model, guide, x, epochs=1, compile=True, progress=False)


def test_compile_is_refused_by_the_schemes_that_run_eagerly_and_must_be_a_bool():
    data = ppvae.load_dataset("digits", limit=100)
    model, guide, _ = ppvae.build("aae", data.x_dim, {"z_dim": 2, "hidden": [16]}, seed=0)
    with pytest.raises(ConfigError, match="'aae' scheme runs eagerly"):
        ppvae.fit(model, guide, data, epochs=1, compile=True, progress=False)
    with pytest.raises(ConfigError, match="compile must be True or False"):
        ppvae.TrainConfig(compile="yes")


def test_compile_without_a_cpp_compiler_is_a_clear_error():
    import torch._inductor.config as inductor_config

    model, guide = _pair()
    # inductor's own patch: a monkeypatch of its config proxy does not restore it cleanly
    with inductor_config.patch({"cpp.cxx": ("no-such-compiler++",)}):
        with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
            compiled_loss(ppvae.get_objective("elbo"), model, guide, _batch())


def test_a_compiled_run_resumes_bit_identically(tmp_path):
    data = ppvae.load_dataset("digits", limit=300)

    def run(out, epochs, resume=False):
        model, guide, _ = ppvae.build("vae", data.x_dim, SMALL, seed=0)
        ppvae.fit(model, guide, data, epochs=epochs, batch_size=64, compile=True, progress=False, seed=0,
                  out_dir=out, resume=resume)
        return [p.detach().clone() for p in list(model.parameters()) + list(guide.parameters())]

    whole = run(tmp_path / "whole", 3)
    run(tmp_path / "split", 1)
    resumed = run(tmp_path / "split", 3, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(whole, resumed))


def test_the_compiled_region_never_reads_the_probe_cache(monkeypatch):
    """The pair's probe is handed to the compiled loss: dynamo must not trace the weak cache of
    probes (it guarded on its contents, which the garbage collector changed mid-compile, and failed
    with an IndexError inside torch once enough earlier pairs had died). A cache that raises on any
    read proves it is not read; an eager loss still reads it."""
    import ppvae.traces as traces

    class Untouchable(dict):
        def __getitem__(self, key):
            raise RuntimeError("the probe cache was read")

    model, guide = _pair(seed=3)
    x = _batch()
    obj = ppvae.get_objective("iwae", 2)
    with pyro.validation_enabled(False):
        compiled = compiled_loss(obj, model, guide, x)
        monkeypatch.setattr(traces, "_PROBES", Untouchable())
        loss = compiled(model, guide, x, 1000)
        assert torch.isfinite(loss)
        with pytest.raises(RuntimeError, match="probe cache was read"):
            obj.loss(model, guide, x, num_data=1000)
        other, other_guide = _pair(seed=4)
        with pytest.raises(ConfigError, match="another model/guide pair"):
            compiled(other, other_guide, x, 1000)
