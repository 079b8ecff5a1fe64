"""The direct path (ppvae.direct) computes what Pyro's traces give (the same draws bit for bit; Normal
log-densities in closed form, equal up to rounding), and is taken only where it is the same
computation."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine

import ppvae
from ppvae.direct import direct_trace, use_direct_path
from ppvae.objectives import get_objective
from ppvae.traces import probe_pair, trace_pair

FAMILIES = [
    ("vae", {"z_dims": [3], "hidden": [[8]]}),
    ("vae", {"z_dims": [4, 2], "hidden": [[8], [6]]}),  # two stochastic layers
    ("vae", {"z_dims": [3], "hidden": [[8]], "likelihood": "normal"}),
    ("vampprior", {"z_dims": [3], "hidden": [[8]], "num_pseudo_inputs": 5}),
    ("mog-prior", {"z_dims": [3], "hidden": [[8]]}),
    ("iop", {"z_dims": [3], "hidden": [[8]], "ratio_hidden": [8]}),
]


def pair_and_data(family, options, digits):
    model, guide, _ = ppvae.build(family, digits.x_dim, options, seed=0)
    model.eval(), guide.eval()  # the IOP's T has dropout: the same mask is not the point here
    return model, guide, digits.train[:7]


def both_paths(fn, seed=0):
    out = []
    for direct in (True, False):
        torch.manual_seed(seed)
        with use_direct_path(direct), pyro.validation_enabled(False):
            out.append(fn())
    return out


@pytest.mark.parametrize("family,options", FAMILIES, ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("k", [1, 4])
def test_same_sites_as_pyros_traces(digits, family, options, k):
    model, guide, x = pair_and_data(family, options, digits)
    probe_pair(model, guide, x)  # warm the probe cache outside the seeded region
    with pyro.validation_enabled(False):  # the direct path applies (it is not a silent fallback)
        assert direct_trace(model, guide, x, (), {}, 1, k, 70) is not None
    direct, traced = both_paths(lambda: trace_pair(model, guide, x, num_particles=k, num_data=70))
    assert type(direct) is type(traced)
    for field in ("scale", "data_factor", "particle_dim", "data_dim", "batch_size", "guide_order", "model_order"):
        assert getattr(direct, field) == getattr(traced, field), field
    for a, b in ((direct.model_sites, traced.model_sites), (direct.guide_sites, traced.guide_sites)):
        assert list(a) == list(b)
        for name in a:
            # Normal densities are closed forms (from the noise, for a guide draw): rounding differs
            torch.testing.assert_close(a[name].log_prob, b[name].log_prob, rtol=1e-6, atol=1e-5, msg=name)
            assert torch.equal(a[name].value, b[name].value), name
            assert (a[name].is_observed, a[name].is_factor) == (b[name].is_observed, b[name].is_factor)
            assert a[name].fn.batch_shape == b[name].fn.batch_shape, name


@pytest.mark.parametrize("family,options", FAMILIES[:4], ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("objective,k", [("elbo", 1), ("elbo-analytic", 1), ("iwae", 5)])
def test_same_loss_and_gradients(digits, family, options, objective, k):
    model, guide, x = pair_and_data(family, options, digits)
    params = list(model.parameters()) + list(guide.parameters())
    obj = get_objective(objective, k)
    probe_pair(model, guide, x)

    def loss_and_grads():
        loss = obj.loss(model, guide, x, num_data=70)
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    (l1, g1), (l2, g2) = both_paths(loss_and_grads)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=1e-4)
    for a, b in zip(g1, g2):  # float32 sums of terms that cancel: rounding relative to the largest entry
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("event_dims", [0, 1, 2])
def test_closed_form_normal_densities_equal_pyros(event_dims):
    """The recorder's guide draw (log q from the noise) and a replayed Normal site's closed form
    against ``Normal.log_prob``: values and gradients in loc and scale."""
    from pyro import distributions as dist

    from ppvae.direct import _LazySite, _Recorder

    torch.manual_seed(0)
    loc = torch.randn(3, 4, 5, requires_grad=True)
    scale = (torch.rand(3, 4, 5) + 0.2).requires_grad_()
    fn = dist.Normal(loc, scale).to_event(event_dims) if event_dims else dist.Normal(loc, scale)
    batch = (3, 4, 5)[: 3 - event_dims]
    torch.manual_seed(1)
    z = _Recorder(batch)("z", fn)
    torch.manual_seed(1)
    assert torch.equal(z, fn.rsample())  # the same draw
    fn_lp = fn.log_prob(z)
    rec = _Recorder(batch)
    torch.manual_seed(1)
    rec("z", fn)
    drawn = rec.sites["z"][3]()  # the guide's closed form, from the noise
    replayed = _LazySite("z", fn, z, False, 4, 3)._fn_log_prob()  # a replayed site's closed form
    for lp in (drawn, replayed):
        torch.testing.assert_close(lp, fn_lp, rtol=1e-6, atol=1e-5)
        g, g_ref = torch.autograd.grad(lp.sum(), [loc, scale], retain_graph=True, materialize_grads=True), \
            torch.autograd.grad(fn_lp.sum(), [loc, scale], retain_graph=True)
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_taken_only_where_it_is_the_same_computation(digits):
    model, guide, x = pair_and_data("vae", FAMILIES[0][1], digits)
    args = (model, guide, x, (), {}, 1, 1, None)
    with pyro.validation_enabled(False):
        assert direct_trace(*args) is not None
        with use_direct_path(False):
            assert direct_trace(*args) is None
        with poutine.scale(scale=2.0):  # a handler around the pair: Pyro must see every site
            assert direct_trace(*args) is None
        assert direct_trace(poutine.mask(model, mask=False), guide, x, (), {}, 1, 1, None) is None
        assert direct_trace(model, guide, x, (x,), {}, 1, 1, None) is None
    with pyro.validation_enabled(True):  # Pyro's support and shape checks run
        assert direct_trace(*args) is None


def test_a_handler_around_the_pair_is_honoured(digits):
    """With poutine.scale around the call, the loss is the scaled one (through Pyro's traces)."""
    model, guide, x = pair_and_data("vae", FAMILIES[0][1], digits)
    obj = get_objective("elbo", 1)
    probe_pair(model, guide, x)
    with pyro.validation_enabled(False):
        torch.manual_seed(0)
        plain = obj.loss(model, guide, x, num_data=70)
        torch.manual_seed(0)
        with poutine.scale(scale=3.0):
            scaled = obj.loss(model, guide, x, num_data=70)
    assert torch.allclose(scaled, 3 * plain)


def test_a_story_module_must_write_its_story():
    from ppvae.direct import StoryModule

    class NoStory(StoryModule):
        pass

    with pytest.raises(TypeError, match="story"):
        NoStory()
