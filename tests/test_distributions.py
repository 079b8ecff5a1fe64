"""ppvae.distributions: BernoulliLogits equals Bernoulli(logits).to_event(1), and DiagonalNormalMixture
equals MixtureSameFamily of diagonal Normals, everywhere ppvae uses them."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppvae.distributions import BernoulliLogits, DiagonalNormalMixture


def test_log_prob_mean_and_shapes_equal_torch_bernoulli():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 11) * 3
    x = (torch.rand(7, 11) < 0.4).float()  # broadcast over the particle dim, as in ppvae's traces
    ours, ref = BernoulliLogits(logits), dist.Bernoulli(logits=logits).to_event(1)
    assert ours.batch_shape == ref.batch_shape == (5, 7) and ours.event_shape == ref.event_shape == (11,)
    assert torch.allclose(ours.log_prob(x), ref.log_prob(x), atol=1e-5)
    assert torch.allclose(ours.mean, ref.mean)
    e = ours.expand((3, 5, 7))
    assert e.batch_shape == (3, 5, 7) and torch.allclose(e.log_prob(x), ref.expand((3, 5, 7)).log_prob(x), atol=1e-5)


def test_gradients_equal():
    logits = torch.randn(4, 9, requires_grad=True)
    x = (torch.rand(4, 9) < 0.5).float()
    (g1,) = torch.autograd.grad(BernoulliLogits(logits).log_prob(x).sum(), logits)
    (g2,) = torch.autograd.grad(dist.Bernoulli(logits=logits).to_event(1).log_prob(x).sum(), logits)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_sampling_frequencies_and_support_validation():
    torch.manual_seed(1)
    d = BernoulliLogits(torch.tensor([[-2.0, 0.0, 2.0]]))
    s = d.sample((20000,))
    assert s.shape == (20000, 1, 3) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(s.mean(0), d.mean, atol=0.02)
    with pytest.raises(ValueError):
        BernoulliLogits(torch.zeros(3), validate_args=True).log_prob(torch.tensor([0.0, 0.5, 1.0]))


def test_under_a_plate_as_an_observed_site():
    logits = torch.randn(6, 10)
    x = (torch.rand(6, 10) < 0.5).float()

    def model():
        with pyro.plate("data", 6):
            pyro.sample("x", BernoulliLogits(logits), obs=x)

    tr = pyro.poutine.trace(model).get_trace()
    tr.compute_log_prob()
    assert torch.allclose(tr.nodes["x"]["log_prob"], dist.Bernoulli(logits=logits).to_event(1).log_prob(x), atol=1e-5)


# --- DiagonalNormalMixture: the matmul-form mixture density of the VampPrior and MoG priors ---

def _mixture_reference(loc, scale, logits):
    """The broadcast form, in float64: MixtureSameFamily of diagonal Normals."""
    return dist.MixtureSameFamily(dist.Categorical(logits=logits.double()),
                                  dist.Normal(loc.double(), scale.double()).to_event(1))


@pytest.mark.parametrize("min_scale", [0.02, 0.5])
def test_mixture_log_prob_equals_the_broadcast_mixture_in_float64(min_scale):
    torch.manual_seed(0)
    k, d = 200, 40
    loc, scale, logits = torch.randn(k, d) * 2 + 1, torch.rand(k, d) * 0.5 + min_scale, torch.randn(k)
    ours, ref = DiagonalNormalMixture(loc, scale, logits), _mixture_reference(loc, scale, logits)
    near = ref.sample((500,)).float()  # where the terms of the expanded square cancel the most
    far = torch.randn(500, d) * 3
    for z in (near, far):
        exact = ref.log_prob(z.double())
        # float32 output: |error| <= 1e-4 nats, or relative 1e-6 where |log p| is in the thousands
        assert torch.allclose(ours.log_prob(z).double(), exact, rtol=1e-6, atol=1e-4)
    # a hand computation for one point and K=2: log sum_k pi_k prod_j N(z_j; mu_kj, s_kj)
    loc2, scale2, logits2 = torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[1.0, 0.5], [2.0, 1.0]]), torch.tensor([0.0, 1.0])
    z = torch.tensor([0.5, 0.0])
    pi = torch.softmax(logits2, 0)
    dens = [pi[i] * torch.exp(-0.5 * ((z - loc2[i]) / scale2[i]).pow(2)).prod() / (2 * math.pi * scale2[i].prod())
            for i in range(2)]
    assert torch.allclose(DiagonalNormalMixture(loc2, scale2, logits2).log_prob(z), torch.log(sum(dens)), atol=1e-6)


def test_mixture_shapes_expand_gradients_and_sampling():
    torch.manual_seed(1)
    loc = torch.randn(3, 2, requires_grad=True)
    raw = torch.zeros(3, 2, requires_grad=True)
    logits = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    m = DiagonalNormalMixture(loc, torch.nn.functional.softplus(raw) + 0.1, logits)
    assert m.batch_shape == () and m.event_shape == (2,)
    z = torch.randn(4, 5, 2)  # (particles, batch, d), as a prior inside the data plate sees it
    e = m.expand((5,))
    assert e.batch_shape == (5,) and e.log_prob(z).shape == (4, 5)
    ref = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(loc, torch.nn.functional.softplus(raw) + 0.1).to_event(1))
    g_ours = torch.autograd.grad(m.log_prob(z).sum(), (loc, raw, logits))
    g_ref = torch.autograd.grad(ref.log_prob(z).sum(), (loc, raw, logits))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-5)
    # samples: component frequencies follow softmax(logits), and the sample mean the mixture mean
    big = DiagonalNormalMixture(torch.tensor([[-10.0], [0.0], [10.0]]), torch.full((3, 1), 0.1), logits.detach())
    s = big.sample((20_000,))
    assert s.shape == (20_000, 1) and big.expand((7,)).sample((2,)).shape == (2, 7, 1)
    freq = torch.stack([(s < -5).float().mean(), (s.abs() < 5).float().mean(), (s > 5).float().mean()])
    assert torch.allclose(freq, torch.softmax(logits.detach(), 0), atol=0.015)
    assert torch.allclose(s.mean(0), big.mean, atol=0.15)
    with pytest.raises(ValueError, match=r"shape \(K, d\)"):
        DiagonalNormalMixture(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="logits must have shape"):
        DiagonalNormalMixture(torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(2))


@pytest.mark.parametrize("event_dims", [0, 1, 2])
def test_normal_kl_equals_torch_on_broadcast_parameters(event_dims):
    """ppvae's closed-form KL of two diagonal Normals (used by elbo-analytic on the hot path), with
    the prior's parameters unexpanded, against torch's registered KL of the expanded pair."""
    from pyro import distributions as dist
    from torch.distributions import kl_divergence

    from ppvae.distributions import normal_kl, normal_parts

    torch.manual_seed(0)
    q_loc, q_scale = torch.randn(3, 4, 5, requires_grad=True), (torch.rand(3, 4, 5) + 0.2).requires_grad_()
    p_loc, p_scale = torch.randn(4, 5), torch.rand(4, 5) + 0.5  # broadcasts over the first dim
    wrap = (lambda d: d.to_event(event_dims)) if event_dims else (lambda d: d)
    q, p = wrap(dist.Normal(q_loc, q_scale)), wrap(dist.Normal(p_loc, p_scale))
    ours = normal_kl(normal_parts(q), normal_parts(p))
    ref = kl_divergence(q, p.expand(q.batch_shape))
    assert ours.shape == ref.shape == (3, 4, 5)[: 3 - event_dims]
    torch.testing.assert_close(ours, ref)
    for a, b in zip(torch.autograd.grad(ours.sum(), [q_loc, q_scale]), torch.autograd.grad(ref.sum(), [q_loc, q_scale])):
        torch.testing.assert_close(a, b)
    # KL is not symmetric: the arguments' order matters
    assert not torch.allclose(normal_kl(normal_parts(p.expand(q.batch_shape)), normal_parts(q)), ours)
    assert normal_parts(dist.Normal(q_loc, q_scale).mask(False)) is None  # masked: not a plain Normal
