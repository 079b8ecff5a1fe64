"""ppvae.distributions.BernoulliLogits equals Bernoulli(logits).to_event(1) everywhere ppvae uses it."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppvae.distributions import BernoulliLogits


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
