"""ppvae.analysis: sampling, reconstruction, posterior means and active units on hand-checkable pairs."""

import math

import pyro
import pyro.distributions as dist
import pytest
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


def test_posterior_means_and_active_units():
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    x[:, 1] *= 0.01  # the second latent coordinate barely varies across datapoints: inactive
    means = posterior_means(guide, x)["z"]
    assert torch.allclose(means, x[:, :2], atol=1e-6)
    units = active_units(guide, x)["z"]
    assert units["active"] == 1 and units["total"] == 2


# --- reconstruct: the decoder's mean at the guide's code, row by row ---------------------------

CODES = torch.tensor([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.5], [0.0, 3.0], [1.0, 1.0]])  # distinct rows
NARROW = 1e-4  # q(z | x_i) = N(CODES[i], NARROW^2): z is CODES[i] to within ~4e-4


def narrow_guide(x):
    """q(z | x_i) = N(CODES[i], 1e-4^2 I): the i-th row's code, whatever x_i holds."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(CODES[: x.shape[0]], NARROW).to_event(1))


class BernoulliDecoder(nn.Module):
    """z ~ N(0, I)^2, x ~ Bernoulli(sigmoid(z @ A + b)): a nonlinear mean, computed by hand below."""

    A = [[1.0, -2.0, 0.5, 0.0], [0.3, 1.0, -1.0, 2.0]]
    b = [0.1, -0.2, 0.0, 0.5]

    def __init__(self):
        super().__init__()
        self.register_buffer("A_", torch.tensor(self.A))
        self.register_buffer("b_", torch.tensor(self.b))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z @ self.A_ + self.b_).to_event(1), obs=x)


def test_reconstruct_is_the_gaussian_decoder_mean_at_each_rows_code():
    m = Shift()  # mean of p(x | z) = z @ A, A = [[1, 2, 3], [0, -1, 1]]
    x = torch.randn(5, 3) * 10  # x's values do not matter to narrow_guide: only its rows
    torch.manual_seed(0)
    rec = reconstruct(m, narrow_guide, x)
    assert rec.shape == (5, 3)
    for i, (z1, z2) in enumerate(CODES.tolist()):
        by_hand = [z1 * 1.0 + z2 * 0.0, z1 * 2.0 + z2 * -1.0, z1 * 3.0 + z2 * 1.0]
        # |z - code| <= ~5e-4 per coordinate, times |A| <= 3 per term
        assert rec[i].tolist() == pytest.approx(by_hand, abs=5e-3), (i, rec[i], by_hand)
    # the rows are distinct, so a permuted (or constant, or zero) reconstruction cannot pass
    expected = CODES @ m.A.detach()
    dist_to_expected = torch.cdist(rec, expected)
    assert (dist_to_expected.argmin(1) == torch.arange(5)).all()
    assert dist_to_expected.diagonal().max() < 0.01 < dist_to_expected.masked_fill(torch.eye(5, dtype=torch.bool), 1e9).min()


def test_reconstruct_is_the_bernoulli_decoder_mean_at_each_rows_code():
    m = BernoulliDecoder()
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]]).repeat(5, 1)  # the same x in every row: only the codes differ
    torch.manual_seed(0)
    rec = reconstruct(m, narrow_guide, x)
    assert rec.shape == (5, 4)
    for i, (z1, z2) in enumerate(CODES.tolist()):
        logits = [z1 * a1 + z2 * a2 + b for a1, a2, b in zip(*BernoulliDecoder.A, BernoulliDecoder.b)]
        by_hand = [1.0 / (1.0 + math.exp(-l)) for l in logits]  # pixel probabilities, not draws
        assert rec[i].tolist() == pytest.approx(by_hand, abs=2e-3), (i, rec[i], by_hand)
    assert len({tuple(round(v, 3) for v in row) for row in rec.tolist()}) == 5


def test_iop_samples_come_from_its_corrected_prior():
    model, _, _ = ppvae.build("iop", 16, {"z_dims": [2], "hidden": [[8]]})
    torch.manual_seed(3)
    z = model.sample_latents(5)
    torch.manual_seed(3)
    assert torch.allclose(sample(model, 5, 16), model.decode(z))
