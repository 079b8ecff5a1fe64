"""ppvae.analysis: sampling, reconstruction, posterior means and active units on hand-checkable pairs."""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import ppvae
from ppvae.analysis import active_units, posterior_means, reconstruct, sample


class Shift(nn.Module):
    """z ~ N(0, 1)^2, x ~ N(z @ A, 0.1): the mean of x is a known linear function of z."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]))
        self.register_buffer("zero", torch.zeros(2))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.zero, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.A, 0.1).to_event(1), obs=x)


class FixedLatents(Shift):
    def sample_latents(self, n):
        return torch.arange(2 * n, dtype=torch.float32).reshape(n, 2)


def guide(x):
    loc = x[..., :2]  # E_q[z | x] = the first two coordinates of x, exactly
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, 0.5).to_event(1))


def test_sample_returns_the_mean_of_x_given_prior_draws():
    torch.manual_seed(0)
    m = Shift()
    x = sample(m, 5000, 3)
    assert x.shape == (5000, 3)
    # E[x] = 0 and Cov[x] = A^T A for z ~ N(0, I)
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=0.1)
    assert torch.allclose(torch.cov(x.T), m.A.T @ m.A, atol=0.25)


def test_sample_uses_a_models_own_latent_sampler():
    m = FixedLatents()
    z = m.sample_latents(4)
    assert torch.allclose(sample(m, 4, 3), z @ m.A.detach())


def test_reconstruct_and_posterior_means_and_active_units():
    torch.manual_seed(0)
    m = Shift()
    x = torch.randn(200, 3)
    x[:, 1] *= 0.01  # the second latent coordinate barely varies across datapoints: inactive
    means = posterior_means(guide, x)["z"]
    assert torch.allclose(means, x[:, :2], atol=1e-6)
    units = active_units(guide, x)["z"]
    assert units["active"] == 1 and units["total"] == 2
    rec = reconstruct(m, guide, x)
    assert rec.shape == (200, 3)
    # reconstruction = z @ A at z ~ q(z|x) = N(x[:2], 0.5): on average x[:, :2] @ A
    assert torch.allclose((rec - x[:, :2] @ m.A.detach()).mean(0), torch.zeros(3), atol=0.25)


def test_iop_samples_come_from_its_corrected_prior():
    model, _, _ = ppvae.build("iop", 16, {"z_dims": [2], "hidden": [[8]]})
    torch.manual_seed(3)
    z = model.sample_latents(5)
    torch.manual_seed(3)
    assert torch.allclose(sample(model, 5, 16), model.decode(z))
