"""Labelled subsets, classification and clustering errors, confusion matrices: what the
semi-supervised and clustering experiments of the adversarial-autoencoder paper measure.

- :func:`labelled_subset`: the fixed labelled examples of a semi-supervised run, drawn from the
  *training* split only, balanced over classes and fixed by a seed (100 labels = 10 per class).
  Taking them from the test set (as one public reimplementation does) would leak the test labels.
- :func:`class_probabilities`: q(y | x) read from a guide's trace (the value of its categorical site).
- :func:`clustering_error`: the unsupervised clustering error: each cluster is labelled with the
  majority label of its *training* members, then every test point gets its cluster's label.
  :func:`most_confident_labels` is the rule of the paper's text (each cluster takes the label of
  the example it is most confident about).
- :func:`confusion_matrix` and :func:`save_confusion_matrix`.

References:
  Makhzani, Shlens, Jaitly, Goodfellow & Frey (2016), Adversarial Autoencoders, Sections 5 and 6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pyro import poutine

from ppvae.errors import ConfigError, DataError
from ppvae.nn import evaluates

ALL = "all"


def labelled_subset(labels: torch.Tensor, count: int | str, *, num_classes: int | None = None, seed: int = 0) -> torch.Tensor:
    """Indices (sorted, int64) of ``count`` labelled examples among ``labels``, ``count / K`` from
    each of the K classes, chosen by a generator seeded with ``seed`` (the same seed gives the same
    subset on every machine); ``count="all"`` gives every index.

    Pass the *training* split's labels: the indices point into it, so the subset can never touch
    the validation or test split.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if labels.dim() != 1:
        raise DataError(f"labels must be one integer per example, got shape {tuple(labels.shape)}")
    if count == ALL:
        return torch.arange(labels.shape[0])
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ConfigError(f"the number of labelled examples must be a positive integer or 'all', got {count!r}")
    K = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    if count % K:
        raise ConfigError(f"{count} labelled examples cannot be balanced over {K} classes: use a multiple of {K}")
    per_class = count // K
    g = torch.Generator().manual_seed(int(seed))
    chosen = []
    for k in range(K):
        members = (labels == k).nonzero().squeeze(-1)
        if members.numel() < per_class:
            raise ConfigError(f"class {k} has {members.numel()} training examples, fewer than the {per_class} per class "
                              f"that {count} labelled examples need")
        chosen.append(members[torch.randperm(members.numel(), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


@torch.no_grad()
@evaluates
def class_probabilities(guide: Callable, x: torch.Tensor, *, site: str = "y", batch_size: int = 1000, **kwargs) -> torch.Tensor:
    """q(y | x) for each row of ``x``, shape (N, K): the value of the guide's categorical ``site``
    (a probability vector, e.g. a Delta at a softmax) or, for a distribution over one-hot values,
    its probabilities."""
    out = []
    for i in range(0, x.shape[0], batch_size):
        node = poutine.trace(guide).get_trace(x[i : i + batch_size], **kwargs).nodes[site]
        fn = node["fn"]
        base = getattr(fn, "base_dist", fn)
        probs = getattr(base, "probs", None) if type(base).__name__ != "Delta" else None
        out.append(probs if probs is not None else node["value"])
    return torch.cat(out)


def classification_error(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``predicted`` (N,) that differ from ``labels`` (N,)."""
    predicted, labels = torch.as_tensor(predicted).cpu(), torch.as_tensor(labels).cpu()
    if predicted.shape != labels.shape:
        raise DataError(f"{predicted.shape[0]} predictions for {labels.shape[0]} labels")
    return float((predicted != labels).float().mean())


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Counts (K, K): row = true label, column = predicted label."""
    predicted, labels = torch.as_tensor(predicted).long().cpu(), torch.as_tensor(labels).long().cpu()
    K = int(num_classes if num_classes is not None else max(int(predicted.max()), int(labels.max())) + 1)
    return torch.bincount(labels * K + predicted, minlength=K * K).reshape(K, K)


def majority_labels(assignments: torch.Tensor, labels: torch.Tensor, num_clusters: int, num_classes: int | None = None) -> torch.Tensor:
    """For each cluster, the most frequent label among its members (ties: the smallest label);
    -1 for a cluster with no members, so that a test point landing there counts as an error."""
    K = int(num_classes if num_classes is not None else int(torch.as_tensor(labels).max()) + 1)
    a, y = torch.as_tensor(assignments).long().cpu(), torch.as_tensor(labels).long().cpu()
    if a.numel() and (a.min() < 0 or a.max() >= num_clusters):
        raise DataError(f"cluster assignments must lie in 0..{num_clusters - 1}")
    counts = torch.bincount(a * K + y, minlength=num_clusters * K).reshape(num_clusters, K)
    mapping = counts.argmax(1)
    mapping[counts.sum(1) == 0] = -1
    return mapping


def most_confident_labels(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For each cluster i, the label of the example x_n that maximizes q(y = i | x_n) (the rule of
    Makhzani et al. 2016, Section 6)."""
    return torch.as_tensor(labels).long().cpu()[torch.as_tensor(probs).cpu().argmax(0)]


def clustering_error(train_assignments: torch.Tensor, train_labels: torch.Tensor, test_assignments: torch.Tensor,
                     test_labels: torch.Tensor, num_clusters: int, *, mapping: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """The clustering error: each cluster is labelled by the majority label of its training members
    (or by ``mapping``, a label per cluster), every test point takes its cluster's label, and the
    error is the share of test points whose label differs. Returns ``(error, mapping)``."""
    if mapping is None:
        mapping = majority_labels(train_assignments, train_labels, num_clusters)
    test_assignments = torch.as_tensor(test_assignments).long().cpu()
    return classification_error(mapping[test_assignments], test_labels), mapping


def save_confusion_matrix(matrix: torch.Tensor, path, *, title: str = "", xlabel: str = "predicted label",
                          ylabel: str = "true label") -> Path:
    """The confusion matrix as an annotated heat map (counts in each cell), one PNG at ``path``."""
    from matplotlib.figure import Figure

    m = torch.as_tensor(matrix).cpu().numpy()
    fig = Figure(figsize=(0.45 * m.shape[1] + 2.2, 0.45 * m.shape[0] + 1.6), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(m, cmap="Blues")
    top = m.max() if m.size else 0
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=7, color="white" if v > 0.6 * top else "black")
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
