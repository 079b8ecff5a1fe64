"""Dropout is a training device: the trainer trains with it whatever mode the networks came in,
validates (and so selects the best checkpoint) on the deterministic network, and the evaluation
functions score the deterministic network and leave the caller's modes as they were."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import ppvae
from ppvae.nn import eval_mode
from ppvae.schemes.categorical import CategoricalAdversarialScheme
from ppvae.semisupervised import class_probabilities, classification_error

OPTS = {"hidden": [32, 32], "labels": 50, "dropout": 0.5}


def test_eval_mode_puts_back_each_submodules_own_flag():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.5)))
    net[2].eval()  # a submodule the caller froze on purpose
    with eval_mode(net, "not a module", None):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, True, False, False]


def _fit(digits, eval_first: bool):
    model, guide, _ = ppvae.build("aae-categorical", digits.x_dim, OPTS, seed=0)
    if eval_first:  # as runs.load hands a pair back
        model.eval(), guide.eval()
    result = ppvae.fit(model, guide, digits, scheme=CategoricalAdversarialScheme(), epochs=1, seed=1,
                       batch_size=100, progress=False)
    return model, guide, result


def test_validation_reads_the_deterministic_network(digits):
    """The logged validation error is that of the network without dropout: recomputed here from the
    guide's class probabilities in eval mode, it is the same number (with dropout 0.5 active during
    validation it was not)."""
    model, guide, result = _fit(digits, eval_first=False)
    assert model.training and guide.training  # left in the mode it trained in
    guide.eval()
    with torch.no_grad():
        predicted = class_probabilities(guide, digits.grey_levels("valid")).argmax(-1)
    assert result.history[-1]["valid_error"] == classification_error(predicted, digits.labels("valid"))


def test_a_pair_handed_over_in_eval_mode_still_trains_with_dropout(digits):
    a = _fit(digits, eval_first=False)
    b = _fit(digits, eval_first=True)
    for m1, m2 in ((a[0], b[0]), (a[1], b[1])):
        assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))


class _DroppedInputGuide(nn.Module):
    """The exact PPCA posterior q(z | x) = p(z | x), read through dropout on x: exact in eval mode,
    a posterior for a randomly thinned x in training mode."""

    def __init__(self, exact: nn.Module):
        super().__init__()
        self.exact, self.drop = exact, nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> None:
        mean, cov = self.exact._model[0].posterior(self.drop(x))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean.float(), scale_tril=torch.linalg.cholesky(cov).float()))


def test_log_likelihood_scores_the_deterministic_network(linear_gaussian):
    """With the exact posterior every importance weight is p(x), so one sample gives the closed form;
    the guide is handed over in training mode, and must come back in it."""
    lg = linear_gaussian
    guide = _DroppedInputGuide(lg.exact_guide()).train()
    est = ppvae.log_likelihood(lg.model, guide, lg.x, num_samples=1)
    torch.testing.assert_close(est.double(), lg.exact_log_px(), atol=1e-4, rtol=0)
    assert guide.training and guide.drop.training
    report = ppvae.evaluate_pair(lg.model, guide, lg.x, num_samples=2, iwae_k=2, diagnostics=False)
    assert abs(report["log_px"] - lg.exact_log_px().mean().item()) < 1e-4


def test_the_guides_class_probabilities_ignore_dropout(digits):
    _, guide, _ = ppvae.build("aae-categorical", digits.x_dim, OPTS, seed=0)
    x = digits.valid[:50]
    guide.train()
    in_training_mode = class_probabilities(guide, x)
    assert guide.training
    guide.eval()
    assert torch.equal(in_training_mode, class_probabilities(guide, x))


def test_the_trainer_validates_any_scheme_without_dropout(digits):
    """The Gaussian-prior AAE's validation reads the pair through no decorated evaluation function:
    the trainer itself must switch dropout off. The logged reconstruction equals the deterministic
    encoder/decoder's, recomputed here in eval mode on the same single validation batch."""
    from ppvae.schemes.adversarial import AdversarialScheme, reconstruction

    model, guide, _ = ppvae.build("aae", digits.x_dim, {"hidden": [32, 32], "z_dim": 2, "dropout": 0.5}, seed=0)
    scheme = AdversarialScheme(hidden=(16,))
    result = ppvae.fit(model, guide, digits, scheme=scheme, epochs=1, seed=1, batch_size=100, progress=False)
    model.eval(), guide.eval()
    with torch.no_grad():
        log_lik, _ = reconstruction(model, guide, digits.valid, scheme.sites[0], {})
    assert result.history[-1]["valid_reconstruction"] == -float(log_lik.sum()) / digits.valid.shape[0]
