"""``python -m ppvae.experiments.prior_comparison_csv``: rows from cell folders written by hand."""

from __future__ import annotations

import csv
import json

import pytest

from ppvae.errors import ConfigError
from ppvae.experiments import prior_comparison_csv


def write_cell(root, dataset, prior, *, ll, ll_k10, epochs, cpu, k=5000, log_z=None, budget="medium"):
    cell = root / dataset / prior
    cell.mkdir(parents=True)
    (cell / "result.json").write_text(json.dumps({"ll": ll, "ll_k10": ll_k10, "epochs_trained": epochs, "eval_samples": k,
                                                  "budget": budget, "num_test": 200}))
    (cell / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "cpu_seconds": c}) + "\n" for i, c in enumerate(cpu)))
    if log_z is not None:
        (cell / "log_z_ais.json").write_text(json.dumps({"log_z": log_z, "se": 0.1}))


def test_rows_read_results_cpu_seconds_and_the_ais_log_z(tmp_path, capsys):
    write_cell(tmp_path, "frey-face", "iop", ll=1228.904, ll_k10=1216.02, epochs=2, cpu=[1800.0, 3600.0], log_z=-4.5678)
    write_cell(tmp_path, "frey-face", "vae", ll=1217.26, ll_k10=1206.47, epochs=2, cpu=[360.0, 360.0])
    out = tmp_path / "prior_comparison.csv"
    assert prior_comparison_csv.main([str(tmp_path), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["dataset"], r["prior"]) for r in rows] == [("frey-face", "vae"), ("frey-face", "iop")]
    assert rows[1] == {"dataset": "frey-face", "prior": "iop", "log_px_k5000": "1228.9", "log_px_k10": "1216.02",
                       "log_z": "-4.568", "epochs": "2", "cpu_hours": "1.5", "budget": "medium", "test_points": "200"}
    assert rows[0]["log_z"] == "" and rows[0]["cpu_hours"] == "0.2"
    assert capsys.readouterr().out == out.read_text()


def test_cells_not_evaluated_at_k5000_and_empty_folders_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no cell result.json"):
        prior_comparison_csv.main([str(tmp_path), "--csv", str(tmp_path / "x.csv")])
    write_cell(tmp_path, "mnist", "vae", ll=-500.0, ll_k10=-510.0, epochs=2, cpu=[1.0], k=100)
    with pytest.raises(ConfigError, match="evaluated with k=100, not 5000"):
        prior_comparison_csv.rows(tmp_path)


def test_merge_keeps_the_other_cells_rows_and_replaces_its_own(tmp_path):
    """--merge: the CSV's Frey Face rows stay when OUT holds only MNIST cells; a cell OUT holds
    replaces its old row; the comparison's order (MNIST first, vae < vampprior < iop) is kept."""
    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "prior_comparison.csv"
    write_cell(first, "frey-face", "vae", ll=1217.26, ll_k10=1206.47, epochs=500, cpu=[360.0])
    write_cell(first, "mnist", "vampprior", ll=-158.41, ll_k10=-158.9, epochs=20, cpu=[3600.0])
    assert prior_comparison_csv.main([str(first), "--csv", str(out)]) == 0
    write_cell(second, "mnist", "vampprior", ll=-99.5, ll_k10=-101.0, epochs=100, cpu=[7200.0], budget="warmup")
    write_cell(second, "mnist", "vae", ll=-98.25, ll_k10=-100.0, epochs=100, cpu=[1800.0], budget="warmup")
    assert prior_comparison_csv.main([str(second), "--csv", str(out), "--merge"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["dataset"], r["prior"], r["budget"]) for r in rows] == [
        ("mnist", "vae", "warmup"), ("mnist", "vampprior", "warmup"), ("frey-face", "vae", "medium")]
    assert rows[1]["log_px_k5000"] == "-99.5" and rows[2]["log_px_k5000"] == "1217.26" and rows[2]["log_z"] == ""
    assert prior_comparison_csv.main([str(second), "--csv", str(out)]) == 0  # without --merge: OUT's cells alone
    assert [r["dataset"] for r in csv.DictReader(out.open())] == ["mnist", "mnist"]
