"""Bad input is caught early with a message that says what to do (issue 8).

1. integer 0..255 data is not silently modelled as Gaussian;
2. the data checks are one cheap vectorized pass;
3. ``--device gpu`` / cuda without CUDA are clear errors (``ppvae.device.resolve_device``);
4. ``--set`` values are type-checked against the family's config (``ppvae.options``);
5. an unwritable ``evaluate --out`` fails before any work (``ppvae.paths.ensure_writable_dir``);
6. ``evaluate --limit 0`` is refused (``ppvae.cli.positive_limit``);
7. an unreliable log p(x) (too many Pareto-k > 0.7) is flagged in the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import ppvae
from ppvae.cli import main
from ppvae.data import check_data, from_array, load_file
from ppvae.errors import ConfigError, DataError

# --- 1. 8-bit images are not Gaussian data ---------------------------------------------------


def _grey_levels(dtype, n=60, d=16):
    return np.random.default_rng(0).integers(0, 256, (n, d)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.int32, np.uint16, np.float32, np.float64])
def test_integer_images_are_refused_without_an_explicit_likelihood(dtype):
    with pytest.raises(DataError) as e:
        from_array(_grey_levels(dtype))
    msg = str(e.value)
    for words in ("8-bit images", "x / 255", "dynamic binarization", "binarize", "likelihood='normal'"):
        assert words in msg, (words, msg)


def test_integer_images_as_a_tensor_and_as_images():
    x = torch.from_numpy(_grey_levels(np.uint8, d=36)).reshape(60, 6, 6)
    with pytest.raises(DataError, match="8-bit images"):
        from_array(x)


def test_an_explicit_likelihood_is_respected():
    x = _grey_levels(np.uint8)
    d = from_array(x, likelihood="normal")
    assert d.likelihood == "normal" and d.train.dtype == torch.float32
    assert float(d.train.max()) > 1  # kept as given: the user asked for it
    scaled = from_array(x / 255.0, dynamic_binarization=True)
    assert (scaled.likelihood, scaled.dynamic_binarization) == ("bernoulli", True)
    assert from_array((x > 127).astype(np.uint8)).likelihood == "bernoulli"


def test_continuous_data_and_other_integers_are_not_mistaken_for_images():
    rng = np.random.default_rng(0)
    assert from_array(rng.integers(0, 256, (50, 4)) + 0.5).likelihood == "normal"  # not whole numbers
    assert from_array(rng.normal(size=(50, 4)) * 100).likelihood == "normal"
    assert from_array(rng.integers(0, 2, (50, 4))).likelihood == "bernoulli"  # int64 {0, 1}
    assert from_array(rng.integers(-1, 2, (50, 4)).astype(np.float32)).likelihood == "normal"  # max 1
    with pytest.raises(DataError, match="integer-coded data"):  # any integer dtype above 1
        from_array(rng.integers(0, 1000, (50, 4)))


def test_load_file_and_npz_splits_refuse_8_bit_images(tmp_path):
    x = _grey_levels(np.uint8)
    np.save(tmp_path / "imgs.npy", x)
    with pytest.raises(DataError, match="imgs: holds only integers from 0 to 255.*8-bit"):
        load_file(tmp_path / "imgs.npy")
    assert load_file(tmp_path / "imgs.npy", likelihood="normal").likelihood == "normal"
    np.savez(tmp_path / "split.npz", x_train=x[:40], x_test=x[40:])
    with pytest.raises(DataError, match="8-bit images"):
        load_file(tmp_path / "split.npz")


def test_train_on_an_8_bit_file_is_one_clear_line(tmp_path, capsys):
    np.save(tmp_path / "imgs.npy", _grey_levels(np.uint8))
    rc = main(["train", "--data", str(tmp_path / "imgs.npy"), "--epochs", "1", "--out", str(tmp_path / "run"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "8-bit images" in err and "x / 255" in err


# --- 2. the checks are one vectorized pass ---------------------------------------------------

_READS = {"isfinite", "isnan", "isinf", "ne", "eq", "lt", "gt", "le", "ge", "__ne__", "__eq__", "__lt__",
          "__gt__", "__le__", "__ge__", "__and__", "__or__", "min", "max", "aminmax", "amin", "amax", "any",
          "all", "sum", "frac", "round", "isin", "logical_and", "logical_or", "double", "abs", "sub", "__sub__",
          "mul", "__mul__", "nonzero", "count_nonzero", "unique"}


class _CountBigReads(TorchFunctionMode):
    """Counts value-reading torch calls on tensors of at least ``big`` elements, and float64
    results of that size."""

    def __init__(self, big: int):
        super().__init__()
        self.big, self.reads, self.float64 = big, [], 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", str(func))
        if name in _READS and any(isinstance(a, torch.Tensor) and a.numel() >= self.big for a in args):
            self.reads.append(name)
        if isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.numel() >= self.big:
            self.float64 += 1
        return out


@pytest.mark.parametrize("kind", ["binary", "grey", "grey-dynamic"])
def test_from_array_reads_the_data_in_one_vectorized_pass(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 784, generator=g)
    if kind == "binary":
        x = (x < 0.3).float()
    counter = _CountBigReads(big=x.numel() // 2)  # the whole array or its 80% train split
    with counter:
        d = from_array(x, dynamic_binarization=kind == "grey-dynamic")
    assert d.likelihood == ("normal" if kind == "grey" else "bernoulli")
    # one min/max reduction over the whole array (finiteness comes with it); the {0, 1} test runs
    # over ~1 MB chunks, and the splits are not checked again
    assert counter.reads == ["aminmax"], counter.reads
    assert counter.float64 == 0


def test_check_data_keeps_every_check_and_its_message():
    x = torch.zeros(100, 50)
    x[7, 3] = 0.5
    with pytest.raises(DataError, match=r"1 values are neither 0 nor 1, first at row 7, column 3"):
        check_data(x, "bernoulli")
    x[7, 3], x[90, 1] = float("nan"), float("-inf")
    with pytest.raises(DataError, match=r"1 NaN and 1 infinite values \(of 5000\), first at row 7, column 3"):
        check_data(x, "normal")
    big = torch.zeros(3000, 784)  # the {0, 1} test is chunked: a fraction in the last chunk is found
    big[-1, -1] = 0.25
    with pytest.raises(DataError, match="row 2999, column 783"):
        check_data(big, "bernoulli")
    check_data(big, "bernoulli", dynamic_binarization=True)
    with pytest.raises(DataError, match=r"\[0, 1\].*min=-1"):
        check_data(big - 1, "bernoulli", dynamic_binarization=True)
    check_data(torch.ones(4, 2, dtype=torch.bool), "bernoulli")
    check_data(np.array([[0, 1], [1, 1]], dtype=np.uint16), "bernoulli")
    with pytest.raises(DataError, match="complex"):
        check_data(torch.zeros(2, 2, dtype=torch.complex64), "normal")


# --- 3. devices ------------------------------------------------------------------------------


def test_resolve_device_names_and_errors(monkeypatch):
    from ppvae.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "cuda0", "tpu", "", "cpu:x"):
        with pytest.raises(ConfigError, match=r"unknown device .*; use auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    with pytest.raises(ConfigError, match=r"^unknown device 'gpu'; use auto, cpu, cuda or cuda:N$"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")
    for name in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ConfigError, match="no CUDA device; use --device auto or cpu"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="torch sees 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("command", ["evaluate", "sample"])
def test_cli_unknown_device_is_one_clear_line(command, tmp_path, capsys):
    assert main([command, str(tmp_path), "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unknown device 'gpu'; use auto, cpu, cuda or cuda:N" in err


def test_cli_cuda_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", str(tmp_path), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# --- 4. model options are type-checked -------------------------------------------------------


def test_coerce_options_converts_what_is_unambiguous():
    from ppvae.models.iop import IOPConfig
    from ppvae.models.vae import VAEConfig
    from ppvae.options import coerce_options

    out = coerce_options(VAEConfig, {"z_dims": [2], "hidden": [[20, 10]], "min_scale": 1, "stochastic_layers": 1.0,
                                     "activation": "relu", "likelihood": "normal"})
    assert out == {"z_dims": (2,), "hidden": ((20, 10),), "min_scale": 1.0, "stochastic_layers": 1,
                   "activation": "relu", "likelihood": "normal"}
    assert type(out["min_scale"]) is float and type(out["stochastic_layers"]) is int
    assert coerce_options(VAEConfig, {"z_dims": None}) == {"z_dims": None}
    assert coerce_options(IOPConfig, {"normalize": True, "ratio_hidden": (8, 8)}) == {"normalize": True,
                                                                                     "ratio_hidden": (8, 8)}
    assert coerce_options(VAEConfig, {"not_a_field": "x"}) == {"not_a_field": "x"}  # make_config reports it


@pytest.mark.parametrize(
    "options, message",
    [
        ({"z_dims": "two"}, "model option z_dims expects a list of integers such as [2] or [200, 100]; got 'two'"),
        ({"z_dims": "12"}, "model option z_dims expects a list of integers such as [2] or [200, 100]; got '12'"),
        ({"z_dims": [2.5]}, "model option z_dims expects a list of integers"),
        ({"z_dims": 2}, "model option z_dims expects a list of integers"),
        ({"hidden": [300, 300]}, "model option hidden expects a list of lists of integers such as [[300, 300]]"),
        ({"stochastic_layers": "two"}, "model option stochastic_layers expects an integer; got 'two'"),
        ({"stochastic_layers": True}, "model option stochastic_layers expects an integer; got True"),
        ({"min_scale": "small"}, "model option min_scale expects a number; got 'small'"),
        ({"activation": 3}, "model option activation expects a string; got 3"),
        ({"likelihood": None}, "model option likelihood expects a string; got None"),
    ],
)
def test_coerce_options_errors(options, message):
    from ppvae.models.vae import VAEConfig
    from ppvae.options import coerce_options

    with pytest.raises(ConfigError) as e:
        coerce_options(VAEConfig, options)
    assert str(e.value).startswith(message), str(e.value)


def test_coerce_options_bool_field():
    from ppvae.models.iop import IOPConfig
    from ppvae.options import coerce_options

    assert coerce_options(IOPConfig, {"normalize": "True"}) == {"normalize": True}  # --set normalize=True
    with pytest.raises(ConfigError, match="model option normalize expects true or false; got 1"):
        coerce_options(IOPConfig, {"normalize": 1})


def test_every_family_default_passes_its_own_check():
    from ppvae.options import coerce_options
    from ppvae.registry import FAMILIES

    for name, family in FAMILIES.items():
        defaults = {f.name: f.default for f in dataclasses.fields(family.config)
                    if f.default is not dataclasses.MISSING}
        assert coerce_options(family.config, defaults) == defaults, name


def test_make_config_checks_types():
    from ppvae.registry import make_config

    with pytest.raises(ConfigError, match="z_dims expects a list of integers"):
        make_config("vae", {"z_dims": "two"})
    assert make_config("vae", {"z_dims": [2], "hidden": [[8]]}).z_dims == (2,)


@pytest.mark.parametrize(
    "setting, words",
    [
        ("z_dims=two", "model option z_dims expects a list of integers such as [2] or [200, 100]; got 'two'"),
        ('z_dims="12"', "got '12'"),
        ("z_dims", "--set expects KEY=VALUE"),
    ],
)
def test_cli_set_is_type_checked(setting, words, tmp_path, capsys):
    rc = main(["train", "--limit", "50", "--epochs", "1", "--set", setting, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and words in err, err


def test_parse_options_keeps_json_and_bare_strings():
    from ppvae.cli import _parse_options

    assert _parse_options(["z_dims=[2, 3]", "activation=relu", "normalize=true", "min_scale=0.1", "name= x "]) == {
        "z_dims": [2, 3], "activation": "relu", "normalize": True, "min_scale": 0.1, "name": "x"}
    assert _parse_options(['activation="relu"', "expr=a=b"]) == {"activation": "relu", "expr": "a=b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _parse_options(["=3"])


# --- 5. an unwritable output folder fails first ----------------------------------------------


def test_ensure_writable_dir(tmp_path, monkeypatch):
    from ppvae.paths import ensure_writable_dir

    p = ensure_writable_dir(tmp_path / "a" / "b")
    assert p == tmp_path / "a" / "b" and p.is_dir() and list(p.iterdir()) == []  # no test file left
    assert ensure_writable_dir(str(p)) == p
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="it is not a folder"):
        ensure_writable_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"not a folder \(.*file is a file\)"):
        ensure_writable_dir(tmp_path / "file" / "sub")
    with pytest.raises(ConfigError):
        ensure_writable_dir("/proc/ppvae-cannot-create-this")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == p else real_access(path, mode, **kw))
    with pytest.raises(ConfigError, match="is not writable; choose another folder"):
        ensure_writable_dir(p)


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A run folder whose checkpoint exists but must not be loaded: loading it fails the test."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"not a checkpoint")
    import ppvae.runs

    def no_loading(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before --out was checked")

    monkeypatch.setattr(ppvae.runs, "load_pair", no_loading)
    return run


def test_evaluate_out_is_a_file(fake_run, tmp_path, capsys):
    (tmp_path / "report").write_text("in the way")
    assert main(["evaluate", str(fake_run), "--out", str(tmp_path / "report"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--out folder" in err and "not a folder" in err, err


def test_evaluate_out_under_a_file(fake_run, tmp_path, capsys):
    (tmp_path / "f").write_text("in the way")
    assert main(["evaluate", str(fake_run), "--out", str(tmp_path / "f" / "sub"), "--device", "cpu"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_evaluate_out_read_only(fake_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == out else real_access(path, mode, **kw))
    assert main(["evaluate", str(fake_run), "--out", str(out), "--device", "cpu"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_evaluate_default_out_read_only_run_folder(fake_run, capsys, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == fake_run else real_access(path, mode, **kw))
    assert main(["evaluate", str(fake_run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "run folder (the default --out)" in err and "is not writable" in err


def test_sample_out_checked_first(fake_run, tmp_path, capsys):
    (tmp_path / "f").write_text("in the way")
    assert main(["sample", str(fake_run), "--out", str(tmp_path / "f" / "s.png"), "--device", "cpu"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["sample", str(fake_run), "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_missing_checkpoint_creates_no_output_folder(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate", str(tmp_path / "nope"), "--out", str(out), "--device", "cpu"]) == 2
    assert "no checkpoint" in capsys.readouterr().err and not out.exists()


# --- 6. --limit --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_evaluate_limit_must_be_positive(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(tmp_path), "--limit", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--limit must be a positive number of datapoints; omit it for all" in err, err


def test_positive_int_helpers():
    import argparse

    from ppvae.cli import positive_int, positive_limit

    assert positive_int("3") == 3 and positive_limit("7") == 7
    for helper in (positive_int, positive_limit):
        for bad in ("0", "-1", "x", "1.5"):
            with pytest.raises(argparse.ArgumentTypeError):
                helper(bad)


# --- 7. an unreliable log p(x) is flagged ------------------------------------------------------


def test_unreliable_log_px_is_flagged(linear_gaussian):
    from ppvae.evaluate import UNRELIABLE_SHARE, evaluate_pair, format_report

    lg = linear_gaussian
    torch.manual_seed(0)
    bad = evaluate_pair(lg.model, lg.guide(shift=3.0, scale_factor=0.3), lg.x, num_samples=200, iwae_k=5)
    assert bad["pareto_k_share_above_0.7"] > UNRELIABLE_SHARE
    assert bad["log_px_reliable"] is False
    for words in ("UNRELIABLE", "Pareto-k > 0.7", "--num-samples", "better guide", "--objective iwae"):
        assert words in bad["warning"], words
    json.dumps(bad)  # still JSON-ready
    table = format_report(bad)
    line = next(l for l in table.splitlines() if l.startswith("log p(x)"))
    assert "UNRELIABLE" in line
    assert "WARNING: log p(x) is UNRELIABLE" in table and "--num-samples" in table and "--objective iwae" in table


def test_exact_guide_is_reliable(linear_gaussian):
    from ppvae.evaluate import evaluate_pair, format_report

    lg = linear_gaussian
    torch.manual_seed(0)
    good = evaluate_pair(lg.model, lg.exact_guide(), lg.x, num_samples=200, iwae_k=5)
    assert good["log_px_reliable"] is True and "warning" not in good
    assert good["pareto_k_share_above_0.7"] == 0.0
    assert "UNRELIABLE" not in format_report(good) and "WARNING" not in format_report(good)
    torch.manual_seed(0)
    wide = evaluate_pair(lg.model, lg.guide(scale_factor=1.2), lg.x, num_samples=200, iwae_k=5)
    assert wide["log_px_reliable"] is True and "warning" not in wide
