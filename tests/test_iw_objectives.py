"""The importance-weighted family (``renyi``, ``miwae``, ``ciwae``, ``piwae``), the guide gradient
estimators ``dreg`` and ``stl``, and ``log_likelihood`` against Pyro's own importance sampling.

Everything runs on probabilistic PCA (``conftest.linear_gaussian``), where log p(x) and p(z | x) are
known in closed form. Hand computations reuse the objective's random numbers by re-tracing the
guide after resetting the seed (the objectives draw nothing else; the structure probe runs under
``fork_rng``). Gradient-estimator statistics use a guide with one copy of its parameters per row
(:class:`ReplicaGuide`) on R copies of one datapoint: one backward pass gives R independent
gradient draws.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppvae
from ppvae.errors import ConfigError
from ppvae.grad_estimators import detached_distribution
from ppvae.objectives import ELBO, IWAE
from ppvae.traces import trace_pair

LOG_2PI = math.log(2 * math.pi)


def normal_lp(v, loc, scale):
    """log N(v; loc, diag scale^2) summed over the last dim, in float64."""
    v, loc, scale = (torch.as_tensor(t).double() for t in (v, loc, scale))
    return (-0.5 * ((v - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def hand_log_w(lg, guide, x, z):
    """log p(x, z) - log q(z | x) for PPCA and the diagonal guide, by hand: (K, B) float64."""
    m = lg.model
    lik = normal_lp(x, z.double() @ m.W.double().T + m.b.double(), m.sigma.double())
    prior = normal_lp(z, 0.0, 1.0)
    loc = x.double() @ guide.A.double().T + guide.c.double()
    return lik + prior - normal_lp(z, loc, guide.log_scale.double().exp())


def drawn_z(model, guide, x, k, seed):
    """The z the objectives draw after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return trace_pair(model, guide, x, num_particles=k).guide_sites["z"].value


def logmeanexp(t, dim=0):
    """log mean exp, written out (float64 inputs of moderate size: no logsumexp needed)."""
    return torch.log(torch.exp(t).mean(dim))


# hand-written bounds from the (K, B) log-weights
HAND = {
    "iwae": lambda lw, o: logmeanexp(lw),
    "renyi": lambda lw, o: logmeanexp((1 - o["alpha"]) * lw) / (1 - o["alpha"]),
    "miwae": lambda lw, o: torch.stack([logmeanexp(g) for g in lw.chunk(o["groups"], 0)]).mean(0),
    "ciwae": lambda lw, o: o["beta"] * lw.mean(0) + (1 - o["beta"]) * logmeanexp(lw),
    "piwae": lambda lw, o: logmeanexp(lw),  # the value is the IWAE bound of all draws
}


# --- 1. values: hand computations, minibatch scaling, limits and ordering ---------------------


@pytest.mark.parametrize("name, options", [
    ("renyi", {"alpha": 0.3}), ("renyi", {"alpha": 2.0}), ("miwae", {"groups": 3}),
    ("ciwae", {"beta": 0.3}), ("piwae", {"groups": 3}),
])
def test_bound_and_scaled_loss_equal_hand_computation(linear_gaussian, name, options):
    lg = linear_gaussian
    guide = lg.guide(shift=0.5, scale_factor=0.7)
    x, K, N = lg.x[:16], 6, 1000  # a minibatch of 16 from a dataset of 1000
    hand = HAND[name](hand_log_w(lg, guide, x, drawn_z(lg.model, guide, x, K, 7)), options)  # (B,)
    obj = ppvae.get_objective(name, K, **options)
    torch.manual_seed(7)
    torch.testing.assert_close(obj.bound(lg.model, guide, x).double(), hand, rtol=1e-5, atol=1e-4)
    torch.manual_seed(7)
    loss = obj.loss(lg.model, guide, x, num_data=N)
    # N / B applied once, after each datapoint's bound: not inside the logsumexp as RenyiELBO does
    torch.testing.assert_close(loss.double(), -(N / x.shape[0]) * hand.sum(), rtol=1e-5, atol=1e-2)


def test_renyi_between_elbo_and_iwae_monotone_in_alpha_and_its_limits(linear_gaussian):
    lg = linear_gaussian
    guide = lg.guide(shift=1.0, scale_factor=0.6)
    torch.manual_seed(0)
    with torch.no_grad():
        tr = trace_pair(lg.model, guide, lg.x, num_particles=20)  # one set of draws for every bound
    iwae, elbo = IWAE(20).per_datapoint(tr), ELBO(20).per_datapoint(tr)
    alphas = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0, 2.0]
    vals = {a: ppvae.get_objective("renyi", 20, alpha=a).per_datapoint(tr) for a in alphas}
    torch.testing.assert_close(vals[0.0], iwae)  # alpha = 0: IWAE
    torch.testing.assert_close(vals[1.0], elbo)  # alpha = 1: the ELBO, exactly
    torch.testing.assert_close(vals[0.99], elbo, atol=0.5, rtol=0)  # ... and the limit alpha -> 1
    for a, b in zip(alphas, alphas[1:]):  # decreasing in alpha, datapoint by datapoint
        assert (vals[b] <= vals[a] + 1e-4).all(), (a, b)
        assert (vals[b] < vals[a]).float().mean() > 0.9, (a, b)  # and strictly so with this guide
    for a in alphas[1:-2]:
        assert ((elbo <= vals[a] + 1e-4) & (vals[a] <= iwae + 1e-4)).all()
    assert (vals[2.0] <= elbo + 1e-4).all()  # alpha > 1: looser than the ELBO, still a lower bound


def test_renyi_limits_have_the_gradients_of_iwae_and_elbo(linear_gaussian):
    lg = linear_gaussian
    guide = lg.guide(shift=0.5, scale_factor=0.7)
    params = [*lg.model.parameters(), *guide.parameters()]
    for alpha, other in ((0.0, "iwae"), (1.0, "elbo")):
        grads = []
        for obj in (ppvae.get_objective("renyi", 5, alpha=alpha), ppvae.get_objective(other, 5)):
            torch.manual_seed(3)
            grads.append(torch.autograd.grad(obj.loss(lg.model, guide, lg.x, num_data=640), params))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_miwae_and_ciwae_reduce_to_iwae_and_elbo(linear_gaussian):
    lg = linear_gaussian
    guide = lg.guide(shift=0.5, scale_factor=0.7)
    torch.manual_seed(0)
    with torch.no_grad():
        tr = trace_pair(lg.model, guide, lg.x, num_particles=6)
    iwae, elbo = IWAE(6).per_datapoint(tr), ELBO(6).per_datapoint(tr)
    torch.testing.assert_close(ppvae.get_objective("miwae", 6, groups=1).per_datapoint(tr), iwae)
    torch.testing.assert_close(ppvae.get_objective("miwae", 6, groups=6).per_datapoint(tr), elbo)
    torch.testing.assert_close(ppvae.get_objective("ciwae", 6, beta=0.0).per_datapoint(tr), iwae)
    torch.testing.assert_close(ppvae.get_objective("ciwae", 6, beta=1.0).per_datapoint(tr), elbo)
    miwae = ppvae.get_objective("miwae", 6, groups=2).per_datapoint(tr)
    assert (elbo <= miwae + 1e-5).all() and (miwae <= iwae + 1e-5).all()


# --- 2. PIWAE: each parameter set gets its own target's gradient ------------------------------


@pytest.mark.parametrize("beta", [1.0, 0.5])  # beta: the KL warm-up weight
def test_piwae_trains_the_model_on_iwae_and_the_guide_on_miwae(linear_gaussian, beta):
    lg = linear_gaussian
    guide = lg.guide(shift=0.5, scale_factor=0.7)
    theta, phi = list(lg.model.parameters()), list(guide.parameters())

    def grads(name, **options):
        torch.manual_seed(5)  # the same draws for every objective
        loss = ppvae.get_objective(name, 6, **options).loss(lg.model, guide, lg.x, num_data=640, beta=beta)
        return loss, torch.autograd.grad(loss, theta + phi)

    p_loss, p = grads("piwae", groups=3)
    i_loss, i = grads("iwae")
    _, m = grads("miwae", groups=3)
    torch.testing.assert_close(p_loss, i_loss)  # its value is the IWAE bound
    for a, b in zip(p[: len(theta)], i[: len(theta)]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    for a, b in zip(p[len(theta):], m[len(theta):]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(m[len(theta)], i[len(theta)], rtol=1e-2)  # the two targets do differ for phi


# --- 3. DReG: unbiased, lower variance, the model's gradient unchanged ------------------------


class ReplicaGuide(nn.Module):
    """q(z) = N(loc_r, diag exp(log_scale_r)^2) for row r: each row has its own copy of the
    parameters, so the gradient with respect to row r's copy is one independent draw."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, rows: int):
        super().__init__()
        self.loc = nn.Parameter(loc.float().expand(rows, -1).clone())
        self.log_scale = nn.Parameter(scale.float().log().expand(rows, -1).clone())

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))


def guide_gradient_draws(lg, objective, seed, rows=4000, shift=0.5, scale_factor=0.8):
    """(rows, 2d) independent draws of d loss / d (loc, log_scale) on one datapoint, for a guide
    ``shift`` posterior sds off-centre and ``scale_factor`` times too narrow."""
    x = lg.x[:1]
    mean, cov = lg.model.posterior(x)
    std = cov.diagonal().sqrt()
    guide = ReplicaGuide(mean[0] + shift * std, std * scale_factor, rows)
    torch.manual_seed(seed)
    loss = objective.loss(lg.model, guide, x.expand(rows, -1))
    return torch.cat(torch.autograd.grad(loss, [guide.loc, guide.log_scale]), 1).double()


@pytest.mark.parametrize("name, options", [("iwae", {}), ("renyi", {"alpha": 0.5})])
def test_dreg_is_unbiased_and_has_lower_variance_at_k50(linear_gaussian, name, options):
    std = guide_gradient_draws(linear_gaussian, ppvae.get_objective(name, 50, **options), seed=1)
    dreg = guide_gradient_draws(linear_gaussian, ppvae.get_objective(name, 50, "dreg", **options), seed=2)
    rows = std.shape[0]
    se = (std.var(0) / rows + dreg.var(0) / rows).sqrt()  # standard error of the difference of means
    z = (dreg.mean(0) - std.mean(0)) / se
    # 4 coordinates at 4.5 standard errors: a false alarm about once in 30,000 runs; a wrong
    # coefficient (w~ instead of w~^2, or the IWAE one for Renyi) lands at 10-100 standard errors
    assert (z.abs() < 4.5).all(), z
    assert (std.mean(0).abs() > 5 * std.std(0) / math.sqrt(rows)).all()  # a gradient there to be unbiased about
    ratio = dreg.var(0) / std.var(0)
    assert (ratio < 0.8).all() and ratio.mean() < 0.6, ratio  # measured: 0.2-0.4 (iwae), 0.15-0.65 (renyi)


def test_dreg_leaves_the_model_gradient_exactly_unchanged(linear_gaussian):
    lg = linear_gaussian
    guide = lg.guide(shift=0.5, scale_factor=0.7)
    theta, phi = list(lg.model.parameters()), list(guide.parameters())
    for name, options in (("iwae", {}), ("renyi", {"alpha": 0.3})):
        out = {}
        for est in ("reparam", "dreg"):
            torch.manual_seed(9)
            loss = ppvae.get_objective(name, 10, est, **options).loss(lg.model, guide, lg.x, num_data=640)
            out[est] = (loss, torch.autograd.grad(loss, theta + phi))
        assert torch.equal(out["reparam"][0], out["dreg"][0])  # the same value, bit for bit
        for a, b in zip(out["reparam"][1][: len(theta)], out["dreg"][1][: len(theta)]):
            assert torch.equal(a, b)  # the decoder's gradient, bit for bit
        assert not torch.allclose(out["reparam"][1][-1], out["dreg"][1][-1])  # the guide's is another


# --- 4. STL: zero variance at the exact posterior ---------------------------------------------


@pytest.fixture
def diagonal_posterior(linear_gaussian):
    """PPCA whose W has orthogonal columns, so that p(z | x) is diagonal and ``guide()`` (shift 0,
    scale factor 1) is the exact posterior."""
    q, _ = torch.linalg.qr(torch.randn(5, 2, generator=torch.Generator().manual_seed(0)))
    lg = linear_gaussian
    with torch.no_grad():
        lg.model.W.copy_(q * torch.tensor([2.0, 0.7]))
    return lg


@pytest.mark.parametrize("name, est", [("elbo", "stl"), ("iwae", "dreg"), ("renyi", "dreg")])
def test_path_estimators_vanish_at_the_exact_posterior(diagonal_posterior, name, est):
    lg = diagonal_posterior
    guide = lg.guide()
    k = 1 if name == "elbo" else 5
    draws = {}
    for e in ("reparam", est):
        draws[e] = []
        for seed in range(5):
            torch.manual_seed(seed)
            loss = ppvae.get_objective(name, k, e).loss(lg.model, guide, lg.x)
            draws[e].append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(guide.parameters()))]))
    path = torch.stack(draws[est])
    assert path.abs().max() < 1e-3, path.abs().max()  # ~0 on every draw: zero variance
    assert torch.stack(draws["reparam"]).std(0).max() > 1.0  # the score term's noise, without it


# --- 5. errors that say what to do ------------------------------------------------------------


def test_option_and_estimator_errors():
    for name, options, match in [
        ("renyi", {"alpha": -0.5}, "alpha must be a number >= 0"),
        ("renyi", {"alpha": float("nan")}, "alpha must be"),
        ("renyi", {"alpha": "half"}, "alpha must be"),
        ("miwae", {"groups": 4}, r"multiple of groups \(M=4\); e.g. k=8"),
        ("piwae", {"groups": 0}, "groups must be a positive integer"),
        ("ciwae", {"beta": 1.5}, r"beta must be a number in \[0, 1\]"),
        ("renyi", {"groups": 2}, r"no option 'groups'; its options: alpha \(default 0.5\)"),
    ]:
        with pytest.raises(ConfigError, match=match):
            ppvae.get_objective(name, 6, **options)
    for name, est, match in [
        ("elbo-analytic", "stl", "use objective 'elbo' with grad_estimator 'stl'"),
        ("iwae", "stl", "use 'dreg'"),
        ("elbo", "dreg", "'stl'"),
        ("miwae", "dreg", "supports: reparam"),
        ("iwae", "rebar", "unknown grad_estimator 'rebar'; known: reparam, stl, dreg"),
    ]:
        with pytest.raises(ConfigError, match=match):
            ppvae.get_objective(name, 6, est)
    with pytest.raises(ConfigError, match="multiple of groups"):  # validation particles checked too
        ppvae.TrainConfig(objective="miwae", num_particles=6, objective_options={"groups": 3}, valid_particles=10)


class HierarchicalGuide(nn.Module):
    """q(z1 | x) q(z2 | z1): z2's parameters depend on the sampled z1."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 2), nn.Linear(2, 2)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(self.a(x), 1.0).to_event(1))
            pyro.sample("z2", dist.Normal(self.b(z1), 1.0).to_event(1))


def two_latent_model(x):
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        z2 = pyro.sample("z2", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(torch.cat([z1, z2, z1[..., :1]], -1), 1.0).to_event(1), obs=x)


class NoArgConstraints(dist.TorchDistribution):
    """A Gaussian that does not declare ``arg_constraints``: ppvae cannot know its parameters."""

    has_rsample = True
    support = dist.constraints.real_vector

    def __init__(self, loc):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return NoArgConstraints(self.loc.expand(*batch_shape, *self.event_shape))

    def rsample(self, sample_shape=torch.Size()):
        return self.loc + torch.randn(sample_shape + self.loc.shape)

    def log_prob(self, value):
        return (-0.5 * (value - self.loc) ** 2 - 0.5 * LOG_2PI).sum(-1)


class FlowGuide(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.enc = kind, nn.Linear(5, 2)
        self.flow = dist.transforms.Spline(2)  # an nn.Module: its parameters are out of a copy's reach

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = self.enc(x)
            if self.kind == "custom":
                pyro.sample("z", NoArgConstraints(loc))
            else:
                pyro.sample("z", dist.TransformedDistribution(dist.Normal(loc, 1.0).to_event(1), [self.flow]))


def test_pairs_the_path_estimators_cannot_handle_get_an_error_naming_the_site(linear_gaussian):
    x = linear_gaussian.x[:4]
    with pytest.raises(ConfigError, match="guide site 'z2' depend on the sampled value of 'z1'"):
        ppvae.get_objective("iwae", 3, "dreg").loss(two_latent_model, HierarchicalGuide(), x)
    with pytest.raises(ConfigError, match="guide site 'z2' depend on the sampled value of 'z1'"):
        ppvae.get_objective("piwae", 4, groups=2).loss(two_latent_model, HierarchicalGuide(), x)
    model = linear_gaussian.model
    with pytest.raises(ConfigError, match="guide site 'z' cannot be re-scored.*does not declare arg_constraints"):
        ppvae.get_objective("elbo", 1, "stl").loss(model, FlowGuide("custom"), x)
    with pytest.raises(ConfigError, match="guide site 'z' cannot be re-scored.*torch.nn.Module"):
        ppvae.get_objective("iwae", 2, "dreg").loss(model, FlowGuide("flow"), x)
    # the values never need the re-scoring: bounds of such pairs still evaluate
    with torch.no_grad():
        ppvae.get_objective("iwae", 3, "dreg").bound(two_latent_model, HierarchicalGuide(), x)


def test_detached_distribution_through_wrappers_scores_the_same_and_cuts_the_parameters():
    loc = torch.randn(3, 2, requires_grad=True)
    raw = torch.randn(3, 2, requires_grad=True)
    z = torch.randn(3, 2, requires_grad=True)
    mask = torch.tensor([[True], [False], [True]])
    cases = [
        (dist.Normal(loc, raw.exp()).mask(mask).to_event(1).expand([4, 3]), z),  # Expanded, Independent, Masked
        (dist.LogNormal(loc, raw.exp()).to_event(1), z.exp()),  # a TransformedDistribution
        (dist.MultivariateNormal(loc, scale_tril=torch.diag_embed(raw.exp())), z),
        (dist.Bernoulli(logits=loc * raw).to_event(1), (torch.randn(3, 2) > 0).float()),
    ]
    for fn, v in cases:
        fn.log_prob(v)  # fills lazily cached tensors (probs, the precision), which must be detached too
        det, params = detached_distribution(fn, "z")
        assert params, fn  # the tensors it found to detach
        lp = det.log_prob(v)
        torch.testing.assert_close(lp, fn.log_prob(v))
        if not v.requires_grad:
            assert not lp.requires_grad, fn  # nothing left to differentiate
            continue
        assert torch.autograd.grad(lp.sum(), [loc, raw], allow_unused=True, retain_graph=True) == (None, None), fn
        assert torch.autograd.grad(lp.sum(), z)[0].abs().sum() > 0  # the path through the value stays


# --- 6. log_likelihood is Pyro's Importance estimator, per datapoint and vectorized -----------


class Bank:
    """A fixed stream of standard-normal numbers: whoever draws first gets the first ones."""

    def __init__(self, n, seed=0):
        self.eps = torch.randn(n, generator=torch.Generator().manual_seed(seed))
        self.used = 0

    def take(self, shape):
        n = math.prod(shape)
        out = self.eps[self.used : self.used + n].reshape(shape)
        self.used += n
        return out


BANK = Bank(0)


class BankNormal(dist.Normal):
    """dist.Normal whose rsample reads the module's ``BANK`` in order (same density)."""

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        return self.loc.expand(shape) + self.scale.expand(shape) * BANK.take(shape)


class BankGuide(nn.Module):
    def __init__(self, guide):
        super().__init__()
        self.g = guide

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = x @ self.g.A.T + self.g.c
            pyro.sample("z", BankNormal(loc, self.g.log_scale.exp().expand(loc.shape)).to_event(1))


def test_log_likelihood_equals_pyro_importance_on_the_same_draws(linear_gaussian):
    global BANK
    lg = linear_gaussian
    guide = BankGuide(lg.guide(shift=0.5, scale_factor=1.5))
    x, S = lg.x[:1], 2000
    with torch.no_grad():
        BANK = Bank(10 * S * 2)
        ppvae.log_likelihood(lg.model, guide, x, num_samples=3)  # the pair's structure probe is drawn and cached
        BANK = Bank(10 * S * 2)
        ours = ppvae.log_likelihood(lg.model, guide, x, num_samples=S)  # (1,): one vectorized trace of S draws
        assert BANK.used == S * 2
        BANK = Bank(10 * S * 2)
        ours_w = trace_pair(lg.model, guide, x, num_particles=S).log_weights()[:, 0]  # its log-weights
        BANK = Bank(10 * S * 2)
        importance = pyro.infer.Importance(lg.model, guide, num_samples=S).run(x)  # S sequential traces
        assert BANK.used == S * 2  # the same numbers, in the same order
    theirs_w = torch.stack([torch.as_tensor(w) for w in importance.log_weights])
    torch.testing.assert_close(ours_w, theirs_w, rtol=1e-5, atol=1e-4)  # draw by draw
    theirs = importance.get_log_normalizer()  # logsumexp(log w) - log S: the same estimator
    assert float(ours) == pytest.approx(float(theirs), abs=1e-4)
    assert float(ours) == pytest.approx(float(lg.exact_log_px(x)), abs=0.05)  # and both near the truth


# --- 7. the API: fit and TrainConfig take the objective with its options ----------------------


def test_fit_takes_an_objective_object_and_records_it_by_name(digits):
    obj = ppvae.get_objective("renyi", 4, "dreg", alpha=0.25)
    cfg = ppvae.TrainConfig(objective=obj)
    assert (cfg.objective, cfg.num_particles, cfg.objective_options, cfg.grad_estimator) == ("renyi", 4, {"alpha": 0.25}, "dreg")
    model, guide, _ = ppvae.build("vae", digits.x_dim, {"z_dims": [2], "hidden": [[16]]}, seed=0)
    result = ppvae.fit(model, guide, digits, objective="miwae", num_particles=4, objective_options={"groups": 2},
                       epochs=1, progress=False)
    assert math.isfinite(result.history[-1]["valid_miwae"])  # validated on the same bound, with its options

    class Mine(IWAE):  # not registered: a config records objectives by name
        name = "mine"

    with pytest.raises(ConfigError, match="BoundScheme"):
        ppvae.TrainConfig(objective=Mine(2))


def test_an_objective_listing_dreg_must_define_its_ratio():
    from ppvae.errors import ConfigError
    from ppvae.objectives import ImportanceWeighted

    class Mean(ImportanceWeighted):  # log mean_k w_k without a dreg_ratio
        name = "mean-test"
        grad_estimators = ("reparam", "dreg")

        def from_log_weights(self, log_w):
            return torch.logsumexp(log_w, 0)

    Mean(5)  # the default estimator needs nothing more
    with pytest.raises(ConfigError, match="dreg_ratio"):
        Mean(5, grad_estimator="dreg")
