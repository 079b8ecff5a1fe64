"""The IWAE reproduction harness (``ppvae reproduce``): budgets, grid, resumability, table, continuation.

The grid runs once per module at the ``quick`` budget (300 training images, 2 epochs, 50 test
points x 100 samples) on the real staged MNIST; the numbers it gives are a machinery check only.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest

from ppvae.cli import build_parser, main
from ppvae.errors import ConfigError
from ppvae.reproduce.iwae_table1 import BUDGETS, CELLS, ROWS, Cell, get_budget, parse_cells, run_cell, train_config
from ppvae.reproduce.paper_numbers import PAPER_EPOCHS, PAPER_NLL
from ppvae.schedules import burda_stages, lr_factor

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_mnist = pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="staged datasets not found")


# --- budgets and grid, no data needed --------------------------------------------------------


def test_paper_budget_is_the_papers_schedule():
    paper = BUDGETS["paper"]
    assert burda_stages(paper.schedule_scale) == [1, 3, 9, 27, 81, 243, 729, 2187]
    assert paper.epochs == PAPER_EPOCHS == 3280
    # lr 1e-3 * 10^(-i/7): first epoch of stage 0, first of stage 1, last epoch of stage 7
    assert lr_factor("iwae", 0, paper.epochs, scale=paper.schedule_scale) == 1.0
    assert lr_factor("iwae", 1, paper.epochs, scale=paper.schedule_scale) == pytest.approx(10 ** (-1 / 7))
    assert lr_factor("iwae", 3279, paper.epochs, scale=paper.schedule_scale) == pytest.approx(0.1)
    assert lr_factor("iwae", 3279 - 2187, paper.epochs, scale=paper.schedule_scale) == pytest.approx(10 ** (-6 / 7))
    cfg = train_config(Cell("iwae", 50, 2), paper)
    assert (cfg.objective, cfg.num_particles, cfg.batch_size, cfg.adam_eps, cfg.lr, cfg.epochs) == ("iwae", 50, 20, 1e-4, 1e-3, 3280)
    assert burda_stages(BUDGETS["medium"].schedule_scale) == [1, 1, 1, 1, 1, 3, 9, 27]
    assert BUDGETS["medium"].epochs == 44 and BUDGETS["quick"].epochs == 2


def test_fast_n_is_the_fast_cosine_decay_over_n_epochs():
    fast, short = get_budget("fast"), get_budget("fast-1000")
    assert fast is BUDGETS["fast"] and fast.epochs == 2500 and short.epochs == 1000 and short.name == "fast-1000"
    assert (short.batch_size, short.lr, short.lr_schedule, short.eval_samples) == (fast.batch_size, fast.lr, "cosine", 5000)
    assert max(short.snapshots) < 1000 < max(fast.snapshots)  # no snapshot at or past the end
    # the decay reaches 0 at the run's own end, not at fast's: halfway at epoch 500 of fast-1000
    assert lr_factor("cosine", 500, short.epochs) == pytest.approx(0.5)
    assert "over 1000 epochs" in short.description
    assert get_budget("fast-2500") == fast  # the same schedule under its two names
    for bad in ("fast-0", "fast-x", "slow-10", "fast1000"):
        with pytest.raises(ConfigError, match="unknown budget"):
            get_budget(bad)


def test_grid_has_12_rows_from_10_runs():
    assert len(ROWS) == 12 and len(CELLS) == 10
    # the VAE with k samples is the k-sample ELBO; k=1 is one shared run
    assert Cell("vae", 50, 1).train_objective == "elbo" and Cell("iwae", 5, 2).train_objective == "iwae"
    assert Cell("both", 1, 2).train_objective == "elbo" and Cell("both", 1, 2).name == "k1-L2"
    assert parse_cells("vae-k1-L1,iwae-k1-L1,iwae-k50-L2") == [Cell("both", 1, 1), Cell("iwae", 50, 2)]
    with pytest.raises(ConfigError, match="unknown cell"):
        parse_cells("vae-k7-L1")
    # the paper's k=1 entries are one number in both rows
    for b, L in (("dynamic", 1), ("dynamic", 2), ("fixed", 1)):
        assert PAPER_NLL[(b, "vae", L, 1)] == PAPER_NLL[(b, "iwae", L, 1)]


def test_cli_has_the_reproduce_commands(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "iwae-table1", "--help"])
    out = capsys.readouterr().out
    assert "--budget" in out and "--cells" in out and "--table-only" in out


# --- the grid on real MNIST, quick budget ----------------------------------------------------


@pytest.fixture(scope="module")
def quick_grid(tmp_path_factory):
    """Run the grid in two parts (a subset, then the rest), as two processes side by side would."""
    if not (DATA / "MNIST").exists():
        pytest.skip("staged datasets not found")
    out = tmp_path_factory.mktemp("iwae")
    base = ["reproduce", "iwae-table1", "--budget", "quick", "--device", "cpu", "--data-root", str(DATA), "--out", str(out)]
    assert main(base + ["--cells", "k1-L1,vae-k5-L1,iwae-k5-L1"]) == 0
    first = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("dynamic/*/result.json")}
    first_table = list(csv.DictReader((out / "table.csv").open()))
    assert main(base) == 0
    return out, first, first_table


@needs_mnist
def test_subset_then_rest_then_table_only(quick_grid):
    out, first, first_table = quick_grid
    assert sorted(first) == ["iwae-k5-L1", "k1-L1", "vae-k5-L1"]
    # after the subset: 12 rows, exactly the 4 rows those 3 runs fill have numbers
    filled = {(r["objective"], r["k"], r["layers"]) for r in first_table if r["our_nll"]}
    assert len(first_table) == 12 and filled == {("VAE", "1", "1"), ("IWAE", "1", "1"), ("VAE", "5", "1"), ("IWAE", "5", "1")}
    # the second run skipped the finished cells and ran the other 7
    now = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("dynamic/*/result.json")}
    assert len(now) == 10 and all(now[c] == first[c] for c in first)
    (out / "table.md").unlink()
    (out / "table.csv").unlink()
    assert main(["reproduce", "iwae-table1", "--table-only", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == 12
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("dynamic/*/result.json")}
    for r in rows:
        nll, k, L = float(r["our_nll"]), int(r["k"]), int(r["layers"])
        cell = "k1-L%d" % L if k == 1 else f"{r['objective'].lower()}-k{k}-L{L}"
        res = results[cell]
        assert math.isfinite(nll) and nll == pytest.approx(res["nll"])
        assert float(r["paper_nll"]) == PAPER_NLL[("dynamic", r["objective"].lower(), L, k)]
        assert float(r["difference"]) == pytest.approx(nll - float(r["paper_nll"]))
        # one active-unit count per stochastic layer, within the layer sizes (50; 100 + 50)
        counts = [int(c) for c in r["our_active_units"].split("+")]
        assert len(counts) == L and all(0 <= c <= t for c, t in zip(counts, res["z_dims"]))
        assert int(r["epochs"]) == 2 and r["eval_points"] == "50" and r["eval_samples"] == "100"
        assert float(r["our_nll_se"]) == pytest.approx(res["nll_se"]) and float(r["our_nll_se"]) > 0
        # training CPU-hours: the trainer's per-epoch cpu_seconds, summed
        metrics = [json.loads(l) for l in (out / "dynamic" / cell / "metrics.jsonl").read_text().splitlines()]
        assert float(r["train_cpu_hours"]) == pytest.approx(sum(m["cpu_seconds"] for m in metrics) / 3600, rel=1e-6)
        # importance sampling with 100 samples is above the one-sample ELBO (up to noise)
        assert -nll >= res["bounds"]["iwae_1"] - 0.5
        assert res["train_objective"] == ("iwae" if r["objective"] == "IWAE" and k > 1 else "elbo")
    # k=1: the same run in both rows
    by = {(r["objective"], r["k"], r["layers"]): r for r in rows}
    assert by[("VAE", "1", "2")]["our_nll"] == by[("IWAE", "1", "2")]["our_nll"]
    md = (out / "table.md").read_text()
    assert md.count("\n| dynamic |") == 12 and "not run" not in md


@needs_mnist
def test_interrupted_cell_resumes_instead_of_restarting(tmp_path):
    from ppvae.reproduce.common import load_iwae_data

    quick = BUDGETS["quick"]
    data = load_iwae_data("dynamic", str(DATA), quick.limit)
    kw = dict(binarization="dynamic", data_spec={"name": "mnist", "root": str(DATA), "limit": quick.limit, "valid_size": 0},
              log=lambda s: None)
    cell = Cell("both", 1, 1)
    run_cell(cell, dataclasses.replace(quick, max_epochs=1), data, tmp_path, **kw)  # "killed" after epoch 1
    metrics = tmp_path / "dynamic" / "k1-L1" / "metrics.jsonl"
    epoch1 = json.loads(metrics.read_text().splitlines()[0])
    result = run_cell(cell, quick, data, tmp_path, **kw)
    lines = [json.loads(l) for l in metrics.read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2] and result["epochs_trained"] == 2
    assert lines[0] == epoch1  # epoch 1 was kept, not retrained
    with pytest.raises(ConfigError, match="other settings"):
        run_cell(cell, dataclasses.replace(quick, max_epochs=3), data, tmp_path, batch_size=50, **kw)


@needs_mnist
def test_a_cosine_run_resumes_only_with_its_own_horizon(tmp_path):
    """A cosine decay over 3 epochs interrupted after 1 must not be continued as a decay over 4:
    the learning rates of epochs 2-3 would not be those of either schedule."""
    from ppvae.reproduce.common import load_iwae_data

    quick = BUDGETS["quick"]
    data = load_iwae_data("dynamic", str(DATA), quick.limit)
    kw = dict(binarization="dynamic", data_spec={"name": "mnist", "root": str(DATA), "limit": quick.limit, "valid_size": 0},
              eval_points=5, eval_samples=5, log=lambda s: None)
    cosine = dataclasses.replace(quick, lr_schedule="cosine", max_epochs=3, snapshots=())
    run_cell(Cell("both", 1, 1), dataclasses.replace(cosine, max_epochs=1), data, tmp_path, **kw)
    with pytest.raises(ConfigError, match="epochs"):
        run_cell(Cell("both", 1, 1), dataclasses.replace(cosine, max_epochs=4), data, tmp_path, **kw)


@needs_mnist
def test_continuation_reports_before_and_after(quick_grid):
    out, _, _ = quick_grid
    assert main(["reproduce", "iwae-continuation", "--budget", "quick", "--device", "cpu", "-k", "5",
                 "--data-root", str(DATA), "--out", str(out)]) == 0
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("dynamic/continuation/*/result.json")}
    assert sorted(results) == ["iwae-to-vae-k5-L1", "vae-to-iwae-k5-L1"]
    for name, r in results.items():
        first, second = name.split("-to-")[0], r["second"]
        stage1 = json.loads((out / "dynamic" / f"{first}-k5-L1" / "result.json").read_text())
        assert r["before"]["nll"] == stage1["nll"]  # stage 1 is the Table 1 cell, reused
        assert math.isfinite(r["after"]["nll"]) and r["after"]["nll"] != r["before"]["nll"]
        assert r["continue_objective"] == ("iwae" if second == "iwae" else "elbo")
        ckpt_cfg = __import__("torch").load(out / "dynamic" / "continuation" / name / "last.pt", weights_only=False)["train_config"]
        assert (ckpt_cfg["objective"], ckpt_cfg["num_particles"], ckpt_cfg["epochs"]) == (r["continue_objective"], 5, 1)
        # stage 2 starts from stage 1's weights: its first epoch is far better than a fresh start's
        s1 = [json.loads(l) for l in (out / "dynamic" / f"{first}-k5-L1" / "metrics.jsonl").read_text().splitlines()]
        s2 = [json.loads(l) for l in (out / "dynamic" / "continuation" / name / "metrics.jsonl").read_text().splitlines()]
        assert s2[0]["train_loss"] < s1[0]["train_loss"] - 20
    md = (out / "continuation.md").read_text()
    assert re.search(r"\| VAE \(2 ep\) \| [\d.]+ \| \d+ \| IWAE \(1 ep, 0.0001\) \| [\d.]+ \|", md)
    assert re.search(r"\| IWAE \(2 ep\) \| [\d.]+ \| \d+ \| VAE \(1 ep, 0.0001\) \| [\d.]+ \|", md)


@needs_mnist
def test_continuation_control_trains_on_the_first_objective_and_is_netted_out(quick_grid, tmp_path):
    """--controls adds stage 2 on the *same* objective (same epochs, lr); the table's last column is
    the switch's change in NLL less the control's."""
    import shutil

    out, _, _ = quick_grid
    shutil.copytree(out / "dynamic" / "vae-k5-L1", tmp_path / "dynamic" / "vae-k5-L1")  # stage 1, reused
    assert main(["reproduce", "iwae-continuation", "--budget", "quick", "--device", "cpu", "-k", "5", "--directions", "vae",
                 "--controls", "--data-root", str(DATA), "--out", str(tmp_path)]) == 0
    results = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("dynamic/continuation/*/result.json")}
    assert sorted(results) == ["vae-to-iwae-k5-L1", "vae-to-vae-k5-L1"]
    switch, control = results["vae-to-iwae-k5-L1"], results["vae-to-vae-k5-L1"]
    assert (switch["control"], control["control"]) == (False, True)
    assert (switch["continue_objective"], control["continue_objective"]) == ("iwae", "elbo")
    cfg = __import__("torch").load(tmp_path / "dynamic" / "continuation" / "vae-to-vae-k5-L1" / "last.pt",
                                   weights_only=False)["train_config"]
    assert (cfg["objective"], cfg["num_particles"], cfg["epochs"], cfg["lr"]) == ("elbo", 5, 1, 1e-4)
    assert control["before"]["nll"] == switch["before"]["nll"]  # both continue the same stage 1
    net = (switch["after"]["nll"] - switch["before"]["nll"]) - (control["after"]["nll"] - control["before"]["nll"])
    rows = {(r["second"], r["control"]): r for r in csv.DictReader((tmp_path / "continuation.csv").open())}
    assert rows[("iwae", "False")]["switch_minus_control"] == f"{net:+.2f}"
    assert rows[("vae", "True")]["switch_minus_control"] == ""
    md = (tmp_path / "continuation.md").read_text()
    assert re.search(r"\| VAE \(control\) \(1 ep, 0.0001\) \|", md)
    assert f"| {net:+.2f} |" in md
