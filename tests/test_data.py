"""Tests of ppvae.data against the staged dataset files in shared/datasets (see its README)."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from ppvae.data import DATASETS, Dataset, check_data, data_root, from_array, load_dataset, load_file
from ppvae.errors import ConfigError, DataError, DataNotFoundError

# The CI clones the repository next to shared/, so the staged data is found relative to this file.
ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="module")
def root(data_root) -> Path:
    """The staged datasets (conftest's ``data_root``: skipped when absent)."""
    return data_root


@pytest.fixture(scope="module")
def full(root):
    """Full loads, cached: each dataset is read once for the whole module."""
    cache: dict[str, Dataset] = {}

    def get(name: str) -> Dataset:
        if name not in cache:
            cache[name] = load_dataset(name, root)
        return cache[name]

    return get


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No PPVAE_DATA and a fresh HOME, so the default root is tmp_path/.cache/ppvae."""
    monkeypatch.delenv("PPVAE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(a)}


# name: (train, valid, test, D, image_shape, likelihood, dynamic, label range)
EXPECTED = {
    "digits": (1397, 200, 200, 64, (8, 8), "bernoulli", True, (0, 9)),
    "mnist": (50000, 10000, 10000, 784, (28, 28), "bernoulli", True, (0, 9)),
    "fashion-mnist": (50000, 10000, 10000, 784, (28, 28), "bernoulli", True, (0, 9)),
    "binarized-mnist": (50000, 10000, 10000, 784, (28, 28), "bernoulli", False, None),
    "omniglot": (23000, 1345, 8115, 784, (28, 28), "bernoulli", True, (0, 49)),
    "frey-face": (1565, 200, 200, 560, (28, 20), "normal", False, None),
    "caltech101": (4100, 2264, 2307, 784, (28, 28), "bernoulli", False, (0, 100)),
}


def test_registry_names():
    assert set(DATASETS) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_named_dataset_shapes_values_labels(full, name):
    n_tr, n_va, n_te, dim, shape, lik, dyn, label_range = EXPECTED[name]
    d = full(name)
    assert d.name == name and len(d) == n_tr and d.x_dim == dim
    assert d.image_shape == shape and d.likelihood == lik and d.dynamic_binarization is dyn
    for split, n in (("train", n_tr), ("valid", n_va), ("test", n_te)):
        x = d.split(split)
        assert x.shape == (n, dim) and x.dtype == torch.float32
        assert float(x.min()) >= 0 and float(x.max()) <= 1 and bool(torch.isfinite(x).all())
        y = d.labels(split)
        if label_range is None:
            assert y is None
        else:
            assert y.shape == (n,) and y.dtype == torch.int64
            lo, hi = int(y.min()), int(y.max())
            assert (
                (lo, hi) == label_range
                if split == "train"
                else label_range[0] <= lo <= hi <= label_range[1]
            )
    # Grey levels stay grey where they should; everything else is final binary data.
    assert is_binary(d.train) is (lik == "bernoulli" and not dyn)
    assert is_binary(d.valid) is (lik == "bernoulli") and is_binary(d.test) is (lik == "bernoulli")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_limit_is_a_prefix_of_the_full_load(full, root, name):
    d, small = full(name), load_dataset(name, root, limit=7)
    for split in ("train", "valid", "test"):
        assert torch.equal(small.split(split), d.split(split)[:7])  # binarization included
        if d.labels(split) is not None:
            assert torch.equal(small.labels(split), d.labels(split)[:7])


def test_digits_needs_no_root(no_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PPVAE_DATA", str(tmp_path / "does-not-exist"))
    d = load_dataset("digits")
    assert (len(d), d.valid.shape, d.test.shape) == (1397, (200, 64), (200, 64))
    assert torch.equal(d.train * 16, torch.round(d.train * 16))  # 0..16 divided by 16
    assert not is_binary(d.train) and float(d.train.max()) == 1.0
    assert (
        sorted(torch.cat([d.train_labels, d.valid_labels, d.test_labels]).bincount().tolist())[0]
        > 170
    )


def test_mnist_matches_idx_bytes(full, root):
    d = full("mnist")
    with gzip.open(root / "MNIST/raw/train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8)
    with gzip.open(root / "MNIST/raw/train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8)[8:]
    images = raw[16:].reshape(60000, 784)
    assert torch.equal(d.train[0], torch.from_numpy(images[0].astype(np.float32) / np.float32(255)))
    assert int(d.train_labels[0]) == labels[0] == 5
    # Validation = the last 10,000 training images, binarized: 0 stays 0, 255 becomes 1.
    assert torch.equal(d.valid_labels, torch.from_numpy(labels[50000:].astype(np.int64)))
    grey = torch.from_numpy(images[50000:].astype(np.float32) / 255)
    assert bool((d.valid[grey == 0] == 0).all()) and bool((d.valid[grey == 1] == 1).all())
    assert abs(float(d.valid.mean() - grey.mean())) < 0.002  # an unbiased single draw
    # ... and the grey levels it was drawn from are kept, for classifiers
    assert torch.equal(d.grey_levels("valid"), grey)


def test_grey_levels_are_what_the_fixed_binarization_was_drawn_from(root):
    from ppvae.data.build import TEST_STREAM, VALID_STREAM, binarize_once

    d = load_dataset("mnist", root, limit=300, seed=3)
    for split, stream in (("valid", VALID_STREAM), ("test", TEST_STREAM)):
        grey = d.grey_levels(split)
        assert not is_binary(grey) and torch.equal(d.split(split), binarize_once(grey, 3, stream))
    assert d.grey_levels("train") is d.train  # dynamic binarization keeps the grey levels there
    fixed = load_dataset("binarized-mnist", root, limit=50)
    assert fixed.grey_levels("test") is fixed.test  # nothing was drawn: the data is the answer
    bare = Dataset("bare", d.train, d.valid, d.test, d.image_shape, "bernoulli", True)
    with pytest.raises(DataError, match="grey levels of the test split were not kept"):
        bare.grey_levels("test")
    assert bare.grey_levels("test", strict=False) is bare.test  # as stored, for a classifier that can do without
    with pytest.raises(DataError, match=r"test_grey: expected the shape of test"):
        Dataset("bad", d.train, d.valid, d.test, d.image_shape, "bernoulli", True, test_grey=d.grey_levels("test")[:10])


def test_test_binarization_is_fixed_by_the_seed(root):
    a, b = load_dataset("mnist", root, limit=300), load_dataset("mnist", root, limit=300)
    c = load_dataset("mnist", root, limit=300, seed=1)
    assert torch.equal(a.test, b.test) and torch.equal(a.valid, b.valid)
    assert not torch.equal(a.test, c.test) and not torch.equal(a.valid, c.valid)
    assert torch.equal(a.train, c.train)  # grey levels do not depend on the seed
    assert is_binary(a.test) and is_binary(c.test)


def _pass(d: Dataset, g: torch.Generator, batch_size: int = 500):
    return list(d.batches("train", batch_size, generator=g))


def test_dynamic_binarization_batches():
    d = load_dataset("digits")
    p = d.split("train")
    a = _pass(d, torch.Generator().manual_seed(0))
    b = _pass(d, torch.Generator().manual_seed(0))
    c = _pass(d, torch.Generator().manual_seed(1))
    for (ia, xa), (ib, xb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)  # same generator state: same batches
    assert not torch.equal(a[0][1], c[0][1])
    assert all(is_binary(x) and x.dtype == torch.float32 for _, x in a)
    # Fresh draws on every pass whose average approaches the grey levels.
    g, total, n_pass = torch.Generator().manual_seed(2), torch.zeros_like(p), 300
    for _ in range(n_pass):
        for idx, x in d.batches("train", 700, generator=g):
            total[idx] += x
    err = (total / n_pass - p).abs()
    assert float(err.mean()) < 0.02 and float(err.max()) < 0.2
    assert not is_binary(p)  # split("train") still gives the grey levels


def test_batches_cover_every_index_once():
    d = load_dataset("digits")
    batches = list(d.batches("train", 100, generator=torch.Generator().manual_seed(0)))
    assert [len(i) for i, _ in batches] == [100] * 13 + [97]  # last partial batch kept
    idx = torch.cat([i for i, _ in batches])
    assert idx.dtype == torch.int64 and not torch.equal(idx, torch.arange(1397))  # shuffled
    assert torch.equal(idx.sort().values, torch.arange(1397))
    ordered = list(d.batches("test", 64, shuffle=False))
    assert torch.equal(torch.cat([i for i, _ in ordered]), torch.arange(200))
    assert all(torch.equal(x, d.test[i]) for i, x in ordered)  # held-out data is never redrawn
    with pytest.raises(ConfigError, match="batch_size"):
        next(d.batches("train", 0))
    with pytest.raises(ConfigError, match="Unknown split 'training'"):
        d.split("training")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_match_cpu():
    d = load_dataset("digits")
    cpu = list(d.batches("train", 256, generator=torch.Generator().manual_seed(3)))
    gpu = list(d.batches("train", 256, generator=torch.Generator().manual_seed(3), device="cuda"))
    assert all(i.is_cuda and x.is_cuda for i, x in gpu)
    assert all(
        torch.equal(a.cpu(), b) and torch.equal(x.cpu(), y)
        for (a, x), (b, y) in zip(gpu, cpu, strict=True)
    )


def test_valid_size_zero(root):
    d = load_dataset("digits", valid_size=0)
    assert (len(d), d.valid.shape) == (1597, (0, 64)) and list(d.batches("valid", 10)) == []
    assert load_dataset("mnist", root, valid_size=0, limit=5).valid.shape == (0, 784)
    with pytest.raises(ConfigError, match="valid_size"):
        load_dataset("digits", valid_size=1597)


def test_binarized_mnist_matches_amat_text(root):
    d = load_dataset("binarized-mnist", root, limit=3)
    with gzip.open(root / "BinarizedMNIST/binarized_mnist_valid.amat.gz", "rt") as f:
        first = np.array(f.readline().split(), dtype=np.float32)
    assert torch.equal(d.valid[0], torch.from_numpy(first))


def test_frey_face_is_upright_and_pickle_fallback_agrees(full, root, tmp_path):
    d = full("frey-face")
    ff = scipy.io.loadmat(root / "FreyFace/frey_rawface.mat")["ff"]
    upright = rows(ff.T.reshape(-1, 28, 20).reshape(-1, 560))
    sideways = rows(ff.T.reshape(-1, 20, 28).transpose(0, 2, 1).reshape(-1, 560))
    got = rows(torch.round(d.train * 255).to(torch.uint8).numpy())
    assert got <= upright and not got & sideways
    (tmp_path / "FreyFace").mkdir()
    shutil.copy(root / "FreyFace/freyfaces.pkl", tmp_path / "FreyFace")
    p = load_dataset("frey-face", tmp_path)
    assert all(torch.equal(p.split(s), d.split(s)) for s in ("train", "valid", "test"))


def test_caltech101_is_column_major_on_disk(full, root):
    d = full("caltech101")
    x = scipy.io.loadmat(root / "Caltech101Silhouettes/caltech101_silhouettes_28.mat")["X"]
    upright = rows(x.reshape(-1, 28, 28, order="F").reshape(-1, 784).astype(np.float32))
    as_stored = rows(x.astype(np.float32))
    got = rows(d.test.numpy())
    assert got <= upright and len(got - as_stored) > 0.9 * len(got)


def test_omniglot_statistics_and_random_holdout(full):
    d = full("omniglot")
    assert abs(float(d.train.mean()) - 0.084) < 0.003  # README: pixel mean 0.084
    assert len(d.valid_labels.unique()) >= 45  # a tail hold-out would hold one or two alphabets


def test_missing_file_messages(root, tmp_path, monkeypatch, no_env):
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte") as e:
        load_dataset("mnist", tmp_path / "arg")
    msg = str(e.value)
    assert str(tmp_path / "arg") in msg and "root argument" in msg and "download=True" in msg
    assert isinstance(e.value, FileNotFoundError)
    monkeypatch.setenv("PPVAE_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError, match=r"frey_rawface\.mat.*\$PPVAE_DATA.*roweis"):
        load_dataset("frey-face")
    monkeypatch.delenv("PPVAE_DATA")
    with pytest.raises(DataNotFoundError, match=r"default.*PPVAE_DATA") as e:
        load_dataset("binarized-mnist")
    assert str(no_env / ".cache" / "ppvae") in str(e.value)


def test_missing_file_points_at_the_right_root(root):
    with pytest.raises(DataNotFoundError, match=re.escape(f"exists under {root};")):
        load_dataset("mnist", root / "MNIST")


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="Did you mean 'mnist'") as e:
        load_dataset("mnsit")
    assert all(name in str(e.value) for name in DATASETS)


def test_dataset_names_forgive_case_and_underscores(root):
    assert load_dataset("Fashion_MNIST", root, limit=2).name == "fashion-mnist"


@pytest.mark.parametrize("name", ["binarized-mnist", "omniglot", "frey-face", "caltech101"])
def test_download_refused_where_torchvision_cannot(root, name):
    with pytest.raises(ConfigError, match="cannot be downloaded.*README"):
        load_dataset(name, root, download=True)


def test_download_uses_torchvision_only_when_asked(root, tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeMNIST:  # stands in for the network: "downloads" by copying the staged files
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            shutil.copytree(ROOT / "MNIST", Path(root) / "MNIST")

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(DataNotFoundError):
        load_dataset("mnist", tmp_path / "r", limit=2)  # no download unless asked
    assert calls == []
    d = load_dataset("mnist", tmp_path / "r", download=True, limit=2)
    assert calls == [(str(tmp_path / "r"), True)] and d.train.shape == (2, 784)
    load_dataset("mnist", tmp_path / "r", download=True, limit=2)  # files present: no new call
    assert len(calls) == 1


def test_data_root_resolution_order(monkeypatch, no_env, tmp_path):
    assert data_root() == tmp_path / ".cache" / "ppvae"
    assert not (tmp_path / ".cache").exists()  # resolving never creates the folder
    monkeypatch.setenv("PPVAE_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("PPVAE_DATA", "")
    assert data_root() == tmp_path / ".cache" / "ppvae"


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (
            torch.zeros(3, 4, 4),
            {},
            r"expected a 2-D array of shape \(N, D\), got shape \(3, 4, 4\)",
        ),
        (torch.zeros(3, 5), {"x_dim": 4}, r"expected shape \(N, 4\).*got shape \(3, 5\)"),
        (torch.zeros(0, 4), {}, "empty"),
        (
            torch.tensor([[0.0, 1.0], [float("nan"), float("inf")]]),
            {},
            r"1 NaN and 1 infinite.*row 1, column 0",
        ),
        (
            torch.tensor([[0.0, 0.5], [1.0, 2.0]]),
            {},
            r"\{0, 1\}.*min=0, max=2.*dynamic binarization.*normal",
        ),
        (
            torch.tensor([[0.0, 0.5], [1.0, 2.0]]),
            {"dynamic_binarization": True},
            r"\[0, 1\].*max=2.*row 1, column 1",
        ),
    ],
)
def test_check_data_errors(x, kwargs, match):
    with pytest.raises(DataError, match=match):
        check_data(x, "bernoulli", **kwargs)


def test_check_data_accepts_valid_data():
    check_data(torch.tensor([[0.0, 1.0]]), "bernoulli", x_dim=2)
    check_data(torch.tensor([[0.2, 0.7]]), "bernoulli", dynamic_binarization=True)
    check_data(torch.tensor([[-3.0, 7.5]]), "normal")
    with pytest.raises(ConfigError, match="Unknown likelihood 'gaussian'"):
        check_data(torch.zeros(2, 2), "gaussian")


def test_from_array_infers_likelihood_and_splits():
    rng = np.random.default_rng(0)
    binary = from_array(rng.integers(0, 2, (100, 6, 5)), labels=np.arange(100) % 3)
    assert (binary.likelihood, binary.dynamic_binarization, binary.image_shape) == (
        "bernoulli",
        False,
        (6, 5),
    )
    assert (len(binary), len(binary.valid), len(binary.test), binary.x_dim) == (80, 10, 10, 30)
    all_labels = torch.cat([binary.train_labels, binary.valid_labels, binary.test_labels])
    assert all_labels.bincount().tolist() == [34, 33, 33]
    grey = torch.rand(50, 4, generator=torch.Generator().manual_seed(0))
    assert from_array(grey).likelihood == "normal"
    dyn = from_array(grey, dynamic_binarization=True)
    assert (dyn.likelihood, dyn.dynamic_binarization) == ("bernoulli", True) and is_binary(dyn.test)
    assert from_array(grey * 5 - 2).likelihood == "normal"
    with pytest.raises(
        ConfigError, match="Unknown likelihood 'bernouli'.*Did you mean 'bernoulli'"
    ):
        from_array(grey, likelihood="bernouli")
    with pytest.raises(DataError, match="dynamic binarization"):
        from_array(grey, likelihood="bernoulli")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        from_array(grey * 2, dynamic_binarization=True)
    with pytest.raises(DataError, match="NaN"):
        from_array(np.array([[np.nan, 1.0], [0.0, 1.0]]))


def test_load_file_npy_and_npz(tmp_path):
    x = (np.random.default_rng(0).random((40, 3, 3)) > 0.5).astype(np.uint8)
    np.save(tmp_path / "a.npy", x)
    d = load_file(tmp_path / "a.npy")
    assert (d.name, d.likelihood, d.image_shape, len(d), len(d.test)) == (
        "a",
        "bernoulli",
        (3, 3),
        32,
        4,
    )
    np.savez(tmp_path / "single.npz", data=x)
    assert len(load_file(tmp_path / "single.npz", valid_fraction=0.25)) == 26
    y = np.arange(40) % 4
    np.savez(tmp_path / "split.npz", x_train=x[:30], x_test=x[30:], y_train=y[:30], y_test=y[30:])
    s = load_file(tmp_path / "split.npz")
    assert (len(s), len(s.valid), len(s.test)) == (27, 3, 10)
    assert torch.equal(s.test, torch.from_numpy(x[30:].reshape(10, 9).astype(np.float32)))
    assert torch.equal(s.test_labels, torch.from_numpy(y[30:]))
    np.savez(tmp_path / "v.npz", x_train=x[:30], x_valid=x[30:35], x_test=x[35:])
    v = load_file(tmp_path / "v.npz")
    assert (len(v), len(v.valid), len(v.test), v.train_labels) == (30, 5, 5, None)
    with pytest.raises(DataNotFoundError, match="missing.npy"):
        load_file(tmp_path / "missing.npy")
    np.savez(tmp_path / "bad.npz", a=x, b=x)
    with pytest.raises(DataError, match="x_train"):
        load_file(tmp_path / "bad.npz")
