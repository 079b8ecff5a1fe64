"""Evaluation of models by their samples: what ``ppvae evaluate`` reports where log p(x) cannot be
estimated (a deterministic encoder, a prior without a density, alpha-GAN), and alongside it.

- ``likelihood_unavailable(model, guide, x)``: why importance sampling cannot score this pair, or None.
- ``sample_report``: the Parzen-window log-likelihood of the GAN/AAE literature (10,000 model
  samples, bandwidth chosen on 1,000 validation images; weak, see ``ppvae.parzen``) and, for MNIST,
  the classifier score and Frechet distance in the feature space of ppvae's cached MNIST
  classifier (``ppvae.sample_quality``: not the ImageNet-Inception numbers of the papers).
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from ppvae.analysis import reconstruct, sample
from ppvae.errors import ConfigError
from ppvae.likelihood import log_likelihood
from ppvae.parzen import parzen_evaluate


def needs_labels(model: Callable) -> bool:
    """Whether the model cannot run without labels: its ``uses_labels`` if it declares one (an AAE
    whose decoder or prior is label-conditioned), else a ``y`` parameter in its signature."""
    declared = getattr(model, "uses_labels", None)
    if declared is not None:
        return bool(declared)
    from ppvae.schemes.adversarial import takes_labels

    return takes_labels(model)


def likelihood_unavailable(model: Callable, guide: Callable, x: torch.Tensor, **kwargs) -> str | None:
    """The reason ``ppvae.log_likelihood`` refuses this pair (a Delta guide, a prior without a
    density, ...), found on two datapoints and one sample; None when it can score it."""
    try:
        with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
            log_likelihood(model, guide, x[:2], num_samples=1, **kwargs)
    except ConfigError as e:
        return str(e)
    return None


@torch.no_grad()
def model_samples(model: Callable, num: int, x_dim: int, *, num_classes: int | None = None, device="cpu",
                  chunk: int = 2000) -> torch.Tensor:
    """``num`` draws of the mean of p(x | z), z from the prior (a uniform label for a model that
    takes one), in chunks, shape (num, x_dim)."""
    out = []
    for start in range(0, num, chunk):
        n = min(chunk, num - start)
        kwargs = {"y": torch.randint(num_classes, (n,), device=device)} if num_classes else {}
        out.append(sample(model, n, x_dim, device=device, **kwargs))
    return torch.cat(out)


def sample_report(model: Callable, data, x_test: torch.Tensor, *, num_samples: int = 10_000, parzen: bool = True,
                  quality: bool = False, data_root=None, num_classes: int | None = None) -> dict:
    """Parzen log-likelihood (``parzen``) and classifier sample quality (``quality``) of the model's
    samples, as a JSON-ready dict. On MNIST the Parzen window scores the grey-level test images and
    the quality uses ppvae's MNIST CNN (``ppvae.sample_quality``), as the papers' protocol; on other
    labelled data an MLP classifier trained on the dataset (:func:`dataset_sample_quality`)."""
    t0 = time.perf_counter()
    samples = model_samples(model, num_samples, x_test.shape[-1], num_classes=num_classes, device=x_test.device).cpu()
    report: dict = {"num_model_samples": int(num_samples)}
    mnist = is_mnist(data)
    if parzen:
        if mnist:
            from ppvae.sample_quality import mnist_images

            test, valid = mnist_images("test", data_root)[: x_test.shape[0]], mnist_images("valid", data_root)[:1000]
            report["parzen_data"] = "grey-level MNIST test images, bandwidth on 1000 grey validation images (the papers' protocol)"
        else:
            test = x_test.cpu()
            valid = (data.split("valid") if data.split("valid").shape[0] else data.split("train"))[:1000]
            report["parzen_data"] = f"{data.name} evaluation split, bandwidth on {valid.shape[0]} validation images"
        report["parzen"] = parzen_evaluate(test, samples, valid)
    if quality:
        if mnist:
            from ppvae.sample_quality import sample_quality

            report["sample_quality"] = sample_quality(samples, data_root)
        else:
            report["sample_quality"] = dataset_sample_quality(samples, data)
    report["sample_eval_seconds"] = time.perf_counter() - t0
    return report


def is_mnist(data) -> bool:
    """MNIST digits at 28x28 (dynamically or fixed binarized): what ppvae's MNIST classifier scores."""
    return data.name in ("mnist", "binarized-mnist") and tuple(data.image_shape) == (28, 28)


class DatasetClassifier(torch.nn.Module):
    """A small MLP classifier of a labelled dataset that is not MNIST (e.g. the 8x8 digits), whose
    penultimate layer is the feature space of :func:`dataset_sample_quality`."""

    def __init__(self, x_dim: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(x_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU())
        self.fc2 = torch.nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def dataset_classifier(data, *, epochs: int = 30, seed: int = 0) -> DatasetClassifier:
    """A :class:`DatasetClassifier` trained on ``data``'s training split (grey levels and fresh
    binarizations, as model samples come in both kinds), cached in ``ppvae.cache.cache_dir()``
    under the dataset's name and size; its test accuracy is in ``.info``."""
    from ppvae.cache import cache_dir
    from ppvae.checkpoint import load, save_atomic
    from ppvae.sample_quality import accuracy

    y = data.labels("train")
    if y is None:
        raise ConfigError(f"{data.name} has no labels: a sample-quality classifier cannot be trained on it")
    num_classes = int(y.max()) + 1
    path = cache_dir() / f"classifier_{data.name}_{len(data)}x{data.x_dim}_{epochs}_{seed}.pt"
    model = DatasetClassifier(data.x_dim, num_classes)
    if path.exists():
        state = load(path)
        model.load_state_dict(state["weights"])
        model.info = state["info"]
        return model.eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DatasetClassifier(data.x_dim, num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        x = data.train
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(100):
                xb = x[idx]
                xb = torch.where(torch.rand(xb.shape[0], 1, generator=gen) < 0.5, xb, (torch.rand(xb.shape, generator=gen) < xb).float())
                loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    model.info = {"test_accuracy": accuracy(model, data.test, data.labels("test")) if data.labels("test") is not None else None}
    save_atomic({"weights": model.state_dict(), "info": model.info}, path)
    return model


def dataset_sample_quality(samples: torch.Tensor, data) -> dict:
    """Classifier score and Frechet distance (to the test split) of ``samples`` in the feature
    space of :func:`dataset_classifier`: comparable only across models scored on the same dataset
    by the same cached classifier."""
    from ppvae.sample_quality import classifier_score, classify, feature_statistics, frechet_distance_from_stats

    model = dataset_classifier(data)
    probs, feats = classify(model, samples.cpu())
    ref_probs, ref_feats = classify(model, data.test)
    return {"classifier_score": classifier_score(probs),
            "frechet_distance": frechet_distance_from_stats(*feature_statistics(feats), *feature_statistics(ref_feats)),
            "num_images": int(samples.shape[0]), "reference_classifier_score": classifier_score(ref_probs),
            "reference": f"{data.name} test split", "classifier": f"MLP on {data.name}", **model.info}


def reconstruction_report(model: Callable, guide: Callable, x: torch.Tensor, **kwargs) -> dict:
    rec = reconstruct(model, guide, x, **kwargs)
    return {"num_datapoints": int(x.shape[0]), "reconstruction_sse": float(((rec - x) ** 2).sum(-1).mean())}


def format_sample_report(report: dict) -> str:
    rows = []
    if "log_px_unavailable" in report:
        rows.append(("log p(x)", "not estimable: " + report["log_px_unavailable"].split(":")[0]))
    if "reconstruction_sse" in report and "elbo" not in report:
        rows.append(("reconstruction SSE", f"{report['reconstruction_sse']:.3f} per datapoint"))
    if "parzen" in report:
        p = report["parzen"]
        rows.append((f"Parzen log-lik. ({report['num_model_samples']} samples)",
                     f"{p['mean']:.2f} +- {p['se']:.2f} nats (sigma {p['sigma']:.3f}; a weak measure, see ppvae.parzen)"))
    if "sample_quality" in report:
        q = report["sample_quality"]
        ref = q.get("reference_classifier_score")
        who = q.get("classifier", "ppvae's MNIST CNN")
        rows.append(("classifier score", f"{q['classifier_score']:.3f}" + (f" (real test images: {ref:.3f}; {who})" if ref else "")))
        rows.append(("Frechet distance", f"{q['frechet_distance']:.3f} (to real test images; {who}, not Inception)"))
    if not rows:
        return ""
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)
