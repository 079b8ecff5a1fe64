"""Sample quality without a likelihood: an MNIST classifier's score and Frechet distance.

For models that only sample (GANs, adversarial autoencoders) the papers report the Inception
score and FID. On MNIST the ImageNet Inception network is the wrong judge, so ppvae follows
TF-GAN's ``mnist_score`` / ``mnist_frechet_distance`` idea: a small CNN trained on MNIST itself
gives the class probabilities p(y|x) and the penultimate-layer features.

- **classifier score** ``exp(E_x KL(p(y|x) || p(y)))``, the Inception-score formula (Salimans et
  al. 2016): 1 when every image gets the same class distribution, 10 when every image is
  classified confidently and the ten classes are equally frequent.
- **Frechet distance** ``||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` between Gaussians
  fitted to the 128 penultimate-layer features of the samples and of real MNIST test images
  (Heusel et al. 2017's FID formula); 0 for identical statistics, lower is better.

**These are NOT the Inception score or FID of the papers** (which use ImageNet's Inception-v3 on
colour images, and whose values mean nothing here), and they are comparable *only across models
scored by the same classifier*: the one ppvae trains once, with a fixed recipe and seed, and
caches in ``cache_dir() / "mnist_classifier.pt"`` (:mod:`ppvae.cache`; set ``$PPVAE_CACHE``). A
different classifier (another recipe, another seed, or TF-GAN's) gives different numbers.

The classifier: conv 3x3 32 - max-pool - conv 3x3 64 - max-pool - 128 units (the features) - 10
classes, trained for 5 epochs with Adam on the 50,000 grey-level MNIST training images of
``ppvae.load_dataset("mnist")`` (never downloaded), each shifted by up to 2 pixels. Half of each
batch is binarized at random (a fresh Bernoulli draw of the grey levels), because model samples
come both ways: Bernoulli means are grey, Bernoulli draws are binary. Measured: 102 s of CPU
time with one torch thread on a 2-core CPU; 99.38% accuracy on the grey test images, 98.98% on
ppvae's binarized ones; classifier score of the real test images 9.76; Frechet distance between
10,000 training and the test images (a real-vs-real floor) 3.79. Commands and more numbers:
docs/sample_quality.md; ``python -m ppvae.sample_quality [ROOT]`` trains or loads the
classifier and prints them.

References:
    T. Salimans et al. "Improved techniques for training GANs." NeurIPS 2016 (Inception score).
    M. Heusel et al. "GANs trained by a two time-scale update rule converge to a local Nash
    equilibrium." NeurIPS 2017 (FID).
    TF-GAN, ``tfgan.eval.mnist_score`` and ``tfgan.eval.mnist_frechet_distance``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ppvae.cache import cache_dir
from ppvae.checkpoint import save_atomic
from ppvae.errors import ConfigError

# The recipe. Changing any value (or VERSION, for a change of code) makes cached classifiers
# stale: they are retrained on next use, and their cached reference statistics recomputed.
VERSION = 1
RECIPE = {
    "version": VERSION,
    "architecture": "conv3x3x32-pool-conv3x3x64-pool-fc128-fc10",
    "optimizer": "adam",
    "lr": 2e-3,  # decayed by a cosine to 0 over the run
    "batch_size": 64,
    "epochs": 5,
    "binarize_fraction": 0.5,  # share of every batch replaced by a random binarization
    "max_shift": 2,  # random translation of every training image by up to so many pixels
    "dropout": 0.25,  # on the 128 features, in training only
    "seed": 0,
    "num_train": None,  # None: all 50,000 training images
}
FEATURE_DIM = 128
_MEAN, _STD = 0.1307, 0.3081  # MNIST grey-level mean and std, for input scaling
REFERENCES = ("test", "test-binarized")


class MnistClassifier(nn.Module):
    """A small CNN on (N, 784) images in [0, 1]: :meth:`features` is the 128-unit penultimate
    layer (after its ReLU), :meth:`forward` the 10 class logits. ``info`` holds the recipe, a
    random id given at training (keys the cached reference statistics) and test accuracies."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)
        self.info: dict = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = ((x.reshape(-1, 1, 28, 28) - _MEAN) / _STD).to(self.fc1.weight.dtype)
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)  # (N, 32, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (N, 64, 7, 7)
        return F.relu(self.fc1(h.flatten(1)))  # (N, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))  # (N, 10) logits


# --- MNIST images ----------------------------------------------------------------------------


def mnist_images(
    split: str, root: str | os.PathLike | None = None, *, binarized: bool = False
) -> torch.Tensor:
    """MNIST images of ``split`` ("train": the 50,000 training images, "valid": the 10,000 held
    out, "test": the 10,000 test images) as (N, 784) float32, grey levels / 255 or, with
    ``binarized``, ppvae's fixed binarization (``load_dataset("mnist").valid/.test``, seed 0; for
    "train" one fixed draw with the same generator). Labels: :func:`mnist_labels`.

    The data is read once per process and the tensors are shared between calls: do not modify
    them in place."""
    return _mnist(split, root, binarized)[0]


def mnist_labels(split: str, root: str | os.PathLike | None = None) -> torch.Tensor:
    """The int64 labels of :func:`mnist_images` ``(split)``."""
    return _mnist(split, root, False)[1]


def _mnist(split, root, binarized):
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    from ppvae.data.root import resolve_root

    data, train_binarized = _load_mnist(resolve_root(root)[0])
    labels = data.labels(split)
    if split == "train" and binarized:  # dynamic binarization has no fixed draw of train: one here
        return train_binarized, labels
    return (data.split(split) if binarized else data.grey_levels(split)), labels


@functools.lru_cache(maxsize=1)
def _load_mnist(root: Path):
    """``load_dataset("mnist", root)`` (which keeps the grey levels of its binarized valid and test
    images) and one fixed draw of its training images, read once per process (~2 s)."""
    from ppvae.data import load_dataset
    from ppvae.data.build import binarize_once

    data = load_dataset("mnist", root)
    return data, binarize_once(data.train, 0, 3)


# --- the cached classifier -------------------------------------------------------------------


def _recipe(num_train: int | None, epochs: int | None) -> dict:
    recipe = dict(RECIPE)
    if num_train is not None:
        recipe["num_train"] = int(num_train)
    if epochs is not None:
        recipe["epochs"] = int(epochs)
    return recipe


def _cache_file(recipe: dict) -> Path:
    if recipe["num_train"] == RECIPE["num_train"] and recipe["epochs"] == RECIPE["epochs"]:
        return cache_dir() / "mnist_classifier.pt"
    n = "all" if recipe["num_train"] is None else recipe["num_train"]
    return cache_dir() / f"mnist_classifier-n{n}-e{recipe['epochs']}.pt"


def _key(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True)


def mnist_classifier(
    root: str | os.PathLike | None = None,
    *,
    retrain: bool = False,
    num_train: int | None = None,
    epochs: int | None = None,
    progress: bool = True,
) -> MnistClassifier:
    """The evaluation classifier, in eval mode on the CPU: loaded from the cache folder, or
    trained on MNIST from the data ``root`` (a few minutes on a 2-core CPU; never downloads) and
    cached atomically when the file is missing, ``retrain`` is true, or its recipe is stale.

    ``num_train`` (the first so many training images) and ``epochs`` override the recipe for
    quick runs (tests); such classifiers are cached under their own file name, never as the
    default ``mnist_classifier.pt``, and their numbers are not comparable with the default's.
    """
    recipe = _recipe(num_train, epochs)
    path = _cache_file(recipe)
    if path.exists() and not retrain:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt or from another torch: retrain
            ckpt = None
        if ckpt is not None and ckpt.get("key") == _key(recipe):
            model = MnistClassifier()
            model.load_state_dict(ckpt["state_dict"])
            model.info = ckpt["info"]
            return model.eval()
    model = train_classifier(root, recipe, progress=progress)
    save_atomic(
        {"key": _key(recipe), "state_dict": model.state_dict(), "info": model.info}, path
    )
    return model


def train_classifier(
    root: str | os.PathLike | None = None, recipe: dict | None = None, *, progress: bool = True
) -> MnistClassifier:
    """Train a fresh classifier with ``recipe`` (default :data:`RECIPE`) without caching it;
    ``info`` records the recipe, the training seconds and the accuracy on the grey and the
    binarized test images. Use :func:`mnist_classifier`, which caches."""
    recipe = dict(RECIPE if recipe is None else recipe)
    x, y = mnist_images("train", root), mnist_labels("train", root)
    if recipe["num_train"] is not None:
        x, y = x[: recipe["num_train"]], y[: recipe["num_train"]]
    t0, c0 = time.perf_counter(), time.process_time()
    # Seeded from the recipe (dropout uses the global generator): the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        model = MnistClassifier(recipe["dropout"])
        _fit(model, x, y, recipe, progress)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    info = {
        "recipe": recipe,
        "id": uuid.uuid4().hex,
        "train_seconds": seconds,  # wall clock
        "train_cpu_seconds": cpu_seconds,  # this process's CPU time (shared machines)
        "torch_threads": torch.get_num_threads(),
    }
    for name, binarized in (("test_accuracy", False), ("test_accuracy_binarized", True)):
        xt, yt = mnist_images("test", root, binarized=binarized), mnist_labels("test", root)
        info[name] = accuracy(model, xt, yt)
    model.info = info
    return model


def _fit(model: MnistClassifier, x: torch.Tensor, y: torch.Tensor, recipe: dict, progress: bool):
    """Adam with a cosine-decayed learning rate; every batch randomly shifted, part binarized."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(recipe["seed"])
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    bs, epochs = recipe["batch_size"], recipe["epochs"]
    steps = math.ceil(len(x) / bs) * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))
    )
    n_bin = int(round(recipe["binarize_fraction"] * bs))
    model.train()
    bar = tqdm(total=steps, desc="MNIST classifier", disable=not progress, leave=False)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            xb = _shift(x[idx], recipe["max_shift"], g)  # (B, 784), a new tensor
            k = min(n_bin, len(idx))
            xb[:k] = (torch.rand(xb[:k].shape, generator=g) < xb[:k]).float()
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()


def _shift(x: torch.Tensor, m: int, g: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (B, 784) translated by its own random (dy, dx) in [-m, m]^2, with
    zeros shifted in; always a new tensor."""
    if m == 0:
        return x.clone()
    B = x.shape[0]
    pad = F.pad(x.reshape(B, 28, 28), (m, m, m, m))  # (B, 28 + 2m, 28 + 2m)
    dy, dx = torch.randint(0, 2 * m + 1, (2, B, 1), generator=g)
    r = (torch.arange(28) + dy)[:, :, None]  # (B, 28, 1)
    c = (torch.arange(28) + dx)[:, None, :]  # (B, 1, 28)
    return pad[torch.arange(B)[:, None, None], r, c].reshape(B, 784)


# --- scores ----------------------------------------------------------------------------------


def _check_images(images) -> torch.Tensor:
    x = torch.as_tensor(images).detach().cpu()  # the classifier runs on the CPU
    if x.dim() >= 2 and tuple(x.shape[1:]) in ((784,), (28, 28), (1, 28, 28)):
        x = x.reshape(x.shape[0], 784).to(torch.float32)
    else:
        raise ConfigError(
            f"expected MNIST-shaped images (N, 784), (N, 28, 28) or (N, 1, 28, 28), got "
            f"{tuple(x.shape)}"
        )
    if x.shape[0] < 2:
        raise ConfigError(f"need at least 2 images, got {x.shape[0]}")
    lo, hi = torch.aminmax(x)
    if not (torch.isfinite(lo) and torch.isfinite(hi) and lo >= 0 and hi <= 1):
        raise ConfigError(
            f"images must hold values in [0, 1] (grey levels or binary), found [{lo}, {hi}]; "
            "divide 0..255 images by 255"
        )
    return x


@torch.no_grad()
def classify(
    model: nn.Module, images: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probs (N, 10), features (N, 128))`` of ``model`` on images (N, 784) in [0, 1]."""
    model.eval()
    probs, feats = [], []
    for i in range(0, len(images), batch_size):
        h = model.features(images[i : i + batch_size])
        probs.append(torch.softmax(model.fc2(h).double(), 1))
        feats.append(h.double())
    return torch.cat(probs), torch.cat(feats)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` whose most probable class is ``labels``."""
    probs, _ = classify(model, images)
    return float((probs.argmax(1) == labels).double().mean())


def classifier_score(
    probs, *, splits: int = 1, return_std: bool = False
) -> float | tuple[float, float]:
    """``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean of the rows of ``probs`` (N, K),
    in float64 (the Inception-score formula of Salimans et al. 2016, here on an MNIST
    classifier's probabilities: not comparable with the papers' Inception scores).

    Between 1 (every row the same) and K (one-hot rows, classes equally frequent). With
    ``splits`` > 1 the rows are cut into that many consecutive parts, each scored with its own
    ``p(y)``, and the mean is returned (with the standard deviation if ``return_std``), as in the
    original Inception-score code.
    """
    p = torch.as_tensor(probs).to(torch.float64)
    if p.dim() != 2 or p.shape[0] == 0:
        raise ConfigError(f"probs must be (N, K) with N >= 1, got {tuple(p.shape)}")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise ConfigError("each row of probs must be a probability vector (>= 0, summing to 1)")
    if not 1 <= splits <= len(p):
        raise ConfigError(f"splits must be in [1, {len(p)}], got {splits}")
    scores = []
    for part in torch.tensor_split(p, splits):
        py = part.mean(0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, py)).sum(1)  # 0 log 0 = 0
        scores.append(math.exp(float(kl.mean())))
    mean = float(np.mean(scores))
    return (mean, float(np.std(scores))) if return_std else mean


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of the rows of ``feats`` (N, D), float64."""
    f = np.asarray(torch.as_tensor(feats).detach().cpu().to(torch.float64))
    if f.ndim != 2 or f.shape[0] < 2:
        raise ConfigError(f"features must be (N, D) with N >= 2, got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance_from_stats(mu1, cov1, mu2, cov2, eps: float = 1e-6) -> float:
    """``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))`` in float64.

    The matrix square root is scipy's ``sqrtm`` of the product; singular covariances (dead
    ReLU units, fewer images than features) are fine for it, and if its result is not finite
    ``eps`` is added to both diagonals. Imaginary parts left by rounding are dropped (an error
    if one is larger than 1e-3).
    """
    from scipy import linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ConfigError(
            f"statistics do not match: means {mu1.shape}, {mu2.shape}; "
            f"covariances {cov1.shape}, {cov2.shape}"
        )
    with warnings.catch_warnings():
        # Dead ReLU units (constant 0 on every image) make the covariances singular; sqrtm warns
        # but its trace still agrees with an eigenvalue computation to ~1e-8 relative (measured).
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(mu1)) * eps
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        if np.abs(covmean.imag).max() > 1e-3:
            raise ArithmeticError(
                f"sqrtm left an imaginary part of {np.abs(covmean.imag).max():.3g}"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))
    return max(fd, 0.0)  # a squared distance: a negative value is rounding (~1e-12)


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D):
    the FID formula of Heusel et al. 2017, on whatever features are given (for
    :func:`sample_quality`, the MNIST classifier's 128 penultimate units: not the papers' FID)."""
    return frechet_distance_from_stats(*feature_statistics(feats_a), *feature_statistics(feats_b))


def reference_statistics(
    name: str = "test", root: str | os.PathLike | None = None, classifier: MnistClassifier | None = None
) -> dict:
    """Feature mean and covariance and classifier score of real MNIST images: ``name`` "test"
    (the 10,000 grey-level test images) or "test-binarized" (ppvae's fixed binarization of
    them). Cached in the cache folder per classifier (its ``info["id"]``)."""
    if name not in REFERENCES:
        raise ConfigError(f"reference must be one of {REFERENCES} or a tensor of images, got {name!r}")
    model = mnist_classifier(root) if classifier is None else classifier
    cid = getattr(model, "info", {}).get("id")
    path = cache_dir() / f"mnist_reference_{name}.pt"
    if cid is not None and path.exists():
        try:
            stats = torch.load(path, map_location="cpu", weights_only=True)
            if stats.get("classifier_id") == cid:
                return stats
        except Exception:
            pass
    x = mnist_images("test", root, binarized=name == "test-binarized")
    probs, feats = classify(model, x)
    mu, cov = feature_statistics(feats)
    stats = {
        "classifier_id": cid,
        "mu": torch.from_numpy(mu),
        "cov": torch.from_numpy(cov),
        "classifier_score": classifier_score(probs),
        "num_images": len(x),
    }
    if cid is not None:
        save_atomic(stats, path)
    return stats


def sample_quality(
    images,
    root: str | os.PathLike | None = None,
    reference=None,
    *,
    classifier: MnistClassifier | None = None,
) -> dict:
    """Classifier score and Frechet distance of model samples ``images`` (N, 784) in [0, 1]
    (grey Bernoulli means or binary draws), scored by ppvae's cached MNIST classifier
    (:func:`mnist_classifier`, trained from the data ``root`` on first use) or ``classifier``.

    ``reference`` for the Frechet distance: None or "test" (the real grey-level MNIST test
    images), "test-binarized", or a tensor of images. Returns ``dict(classifier_score,
    frechet_distance, num_images, reference_classifier_score, reference)``.

    NOT the ImageNet-Inception IS/FID of the papers: comparable only across models scored by the
    same classifier (TF-GAN's ``mnist_score`` / ``mnist_frechet_distance`` idea). Use a few
    thousand images or more: both numbers are biased with few samples (FID upwards).
    """
    x = _check_images(images)
    model = mnist_classifier(root) if classifier is None else classifier
    probs, feats = classify(model, x)
    if reference is None or isinstance(reference, str):
        name = "test" if reference is None else reference
        ref = reference_statistics(name, root, model)
        ref_mu, ref_cov, ref_score = ref["mu"], ref["cov"], ref["classifier_score"]
    else:
        ref_x = _check_images(reference)
        ref_probs, ref_feats = classify(model, ref_x)
        ref_mu, ref_cov = feature_statistics(ref_feats)
        ref_score, name = classifier_score(ref_probs), f"{len(ref_x)} given images"
    return {
        "classifier_score": classifier_score(probs),
        "frechet_distance": frechet_distance_from_stats(*feature_statistics(feats), ref_mu, ref_cov),
        "num_images": len(x),
        "reference_classifier_score": ref_score,
        "reference": name,
    }


def main(root: str | os.PathLike | None = None) -> dict:
    """Train (or load) the classifier and print the reference numbers of real MNIST images."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = mnist_classifier(root)
    load_seconds = time.perf_counter() - t0
    info = model.info
    out = {
        "classifier_train_seconds": info["train_seconds"],
        "classifier_train_cpu_seconds": info.get("train_cpu_seconds"),
        "classifier_load_or_train_seconds": load_seconds,
        "test_accuracy_grey": info["test_accuracy"],
        "test_accuracy_binarized": info["test_accuracy_binarized"],
    }
    t0 = time.perf_counter()
    test = sample_quality(mnist_images("test", root), root, classifier=model)
    out["seconds_sample_quality_10000"] = time.perf_counter() - t0
    out["classifier_score_test_grey"] = test["classifier_score"]
    out["classifier_score_test_grey_10_splits"] = classifier_score(
        classify(model, mnist_images("test", root))[0], splits=10, return_std=True
    )
    out["classifier_score_test_binarized"] = reference_statistics("test-binarized", root, model)[
        "classifier_score"
    ]
    train = mnist_images("train", root)[:10_000]
    out["frechet_train10k_vs_test_grey"] = sample_quality(train, root, classifier=model)[
        "frechet_distance"
    ]
    train_bin = mnist_images("train", root, binarized=True)[:10_000]
    out["frechet_train10k_binarized_vs_test_binarized"] = sample_quality(
        train_bin, root, "test-binarized", classifier=model
    )["frechet_distance"]
    out["frechet_test_binarized_vs_test_grey"] = sample_quality(
        mnist_images("test", root, binarized=True), root, classifier=model
    )["frechet_distance"]
    out["classifier_score_train10k_grey"] = sample_quality(train, root, classifier=model)[
        "classifier_score"
    ]
    for k, v in out.items():
        print(f"{k}: {v}")
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else None)
