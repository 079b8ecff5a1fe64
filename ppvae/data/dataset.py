"""The :class:`Dataset` container and its mini-batch iterator.

A dataset is held whole in (CPU) memory as float32 matrices: every dataset ppvae ships is at most
a few hundred MB, and the marginal-likelihood evaluation wants random access to all test points.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ppvae.errors import ConfigError, DataError

from .checks import check_likelihood

SPLITS = ("train", "valid", "test")


@dataclass(eq=False, repr=False)  # eq/repr over tensors would be ambiguous / print megabytes
class Dataset:
    """A train/valid/test split of flattened images (or any vectors) for a generative model.

    ``train`` holds grey levels in [0, 1] when ``dynamic_binarization`` is true: each training
    batch is then a fresh Bernoulli draw (Salakhutdinov & Murray, "On the quantitative analysis of
    deep belief networks", ICML 2008). ``valid`` and ``test`` always hold final values, binarized
    once with a fixed seed, so that held-out log-likelihoods are comparable across runs; the grey
    levels they were drawn from are kept as ``valid_grey`` and ``test_grey`` (see
    :meth:`grey_levels`: a classifier should read the image, not one noisy draw of it).
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, int]
    likelihood: str
    dynamic_binarization: bool
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    valid_grey: torch.Tensor | None = None
    test_grey: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # Structural checks only (no pass over the values): cheap, and they catch loader bugs early.
        check_likelihood(self.likelihood)
        if self.dynamic_binarization and self.likelihood != "bernoulli":
            raise ConfigError(
                f"{self.name}: dynamic binarization needs likelihood='bernoulli', "
                f"got {self.likelihood!r}."
            )
        self.image_shape = tuple(int(s) for s in self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 2:
            raise ConfigError(f"{self.name}: image_shape must be (H, W), got {self.image_shape}.")
        dims = {s: getattr(self, s) for s in SPLITS}
        for split, x in dims.items():
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.float32:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise DataError(
                    f"{self.name}.{split}: expected a float32 (N, D) tensor, got {shape}."
                )
            if x.shape[1] != self.train.shape[1]:
                raise DataError(
                    f"{self.name}.{split}: has D={x.shape[1]} columns but train has "
                    f"D={self.train.shape[1]}."
                )
            labels = getattr(self, f"{split}_labels")
            if labels is not None and tuple(labels.shape) != (x.shape[0],):
                raise DataError(
                    f"{self.name}.{split}_labels: expected shape ({x.shape[0]},), "
                    f"got {tuple(labels.shape)}."
                )
            grey = getattr(self, f"{split}_grey", None)
            if grey is not None and (not isinstance(grey, torch.Tensor) or grey.shape != x.shape):
                shape = tuple(grey.shape) if isinstance(grey, torch.Tensor) else type(grey).__name__
                raise DataError(
                    f"{self.name}.{split}_grey: expected the shape of {split}, "
                    f"{tuple(x.shape)}, got {shape}."
                )
        if math.prod(self.image_shape) != self.x_dim:
            raise ConfigError(
                f"{self.name}: image_shape {self.image_shape} has {math.prod(self.image_shape)} "
                f"pixels but the data has D={self.x_dim}."
            )

    @property
    def x_dim(self) -> int:
        """Number of dimensions D of one data point."""
        return int(self.train.shape[1])

    def __len__(self) -> int:
        """Number of training points."""
        return int(self.train.shape[0])

    def __repr__(self) -> str:
        shapes = ", ".join(f"{s}={tuple(getattr(self, s).shape)}" for s in SPLITS)
        return (
            f"Dataset(name={self.name!r}, {shapes}, image_shape={self.image_shape}, "
            f"likelihood={self.likelihood!r}, dynamic_binarization={self.dynamic_binarization}, "
            f"labels={self.train_labels is not None})"
        )

    def _check_split(self, name: str) -> None:
        if name not in SPLITS:
            raise ConfigError(f"Unknown split {name!r}; choose one of {', '.join(SPLITS)}.")

    def split(self, name: str) -> torch.Tensor:
        """The data of split ``name`` ("train" | "valid" | "test").

        For "train" with dynamic binarization these are the grey levels, not a binary draw.
        """
        self._check_split(name)
        return getattr(self, name)

    def labels(self, name: str) -> torch.Tensor | None:
        """The int64 labels of split ``name``, or None if the dataset has no labels."""
        self._check_split(name)
        return getattr(self, f"{name}_labels")

    def grey_levels(self, name: str, *, strict: bool = True) -> torch.Tensor:
        """The values split ``name`` was drawn from: the grey levels of a dynamically binarized
        dataset (for "train" these are the split itself), the split's data otherwise.

        A binarized dataset built by hand without ``valid_grey``/``test_grey`` raises a
        :class:`DataError`, or with ``strict=False`` gives the split as stored (its binary draw).

        Held-out log-likelihoods are scored on the fixed binary draw (:meth:`split`); a
        classifier is scored on the grey levels, as the classification literature reads MNIST:
        one binary draw of a test digit loses information (a plain 784-500-500-10 MLP: 1.97% test
        error on MNIST's binary draws, 1.52% on their grey levels; ``python -m
        ppvae.experiments.mlp_binarization``, docs/aae_categorical.md).
        """
        self._check_split(name)
        if not self.dynamic_binarization or name == "train":
            return self.split(name)
        grey = getattr(self, f"{name}_grey")
        if grey is None and not strict:
            return self.split(name)
        if grey is None:
            raise DataError(
                f"{self.name}: the grey levels of the {name} split were not kept; build the dataset "
                f"with ppvae.load_dataset (or pass {name}_grey=...) to classify from them."
            )
        return grey

    def batches(
        self,
        split: str,
        batch_size: int,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
        device: torch.device | str = "cpu",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(indices, x)`` mini-batches covering split ``split`` once (one epoch).

        ``indices`` is (B,) int64 and ``x`` is (B, D) float32, both on ``device``; the last
        partial batch is kept so every point is seen once per pass. Shuffling uses
        ``torch.randperm(N, generator=generator)``. For "train" with dynamic binarization, ``x``
        is a fresh Bernoulli draw of the grey levels, made on the CPU with ``generator`` so that a
        run is reproducible from the generator state alone, whatever the device.
        """
        self._check_split(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if generator is not None and generator.device.type != "cpu":
            raise ConfigError(
                f"batches() needs a CPU torch.Generator (draws are made on the CPU for "
                f"reproducibility), got one on {generator.device}."
            )
        data = self.split(split)
        n = int(data.shape[0])
        binarize = split == "train" and self.dynamic_binarization
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        device = torch.device(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = data.index_select(0, idx)
            if binarize:
                x = (torch.rand(x.shape, generator=generator) < x).to(torch.float32)
            yield idx.to(device), x.to(device)
