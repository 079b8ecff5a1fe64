"""Datasets for ppvae: named benchmark datasets, user arrays and files, and data validation.

``load_dataset(name)`` returns a :class:`Dataset` with train/valid/test float32 matrices;
``from_array`` and ``load_file`` wrap user data; ``check_data`` validates a matrix against a
likelihood. The default dataset, ``digits``, ships with scikit-learn and needs no download.
"""

from .arrays import from_array, load_file
from .checks import LIKELIHOODS, check_data
from .dataset import SPLITS, Dataset
from .registry import DATASETS, DEFAULT_DATASET, load_dataset
from .root import data_root

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "LIKELIHOODS",
    "SPLITS",
    "Dataset",
    "check_data",
    "data_root",
    "from_array",
    "load_dataset",
    "load_file",
]
