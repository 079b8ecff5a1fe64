"""The fast budget's NLL-against-CPU-hours study scores every snapshot and caches it."""

from __future__ import annotations

import csv
import json

import pytest

import ppvae
from ppvae.experiments import iwae_snapshots
from ppvae.reproduce.iwae_table1 import keep_snapshots


def test_scores_each_snapshot_against_its_cpu_hours(tmp_path, digits, monkeypatch):
    cell = tmp_path / "dynamic" / "k1-L1"
    options = {"z_dims": [2], "hidden": [[8]]}
    model, guide, _ = ppvae.build("vae", digits.x_dim, options, seed=0)
    meta = {"family": "vae", "model_options": options, "x_dim": digits.x_dim, "dataset": {"root": None, "seed": 0}}
    ppvae.fit(model, guide, digits, epochs=3, batch_size=100, out_dir=cell, meta=meta, progress=False,
              callbacks=[keep_snapshots(cell, (1, 3), model, guide)])
    # the harness's test set is MNIST; the digits stand in for it here
    monkeypatch.setattr(iwae_snapshots, "load_iwae_data", lambda *a, **k: digits)
    out_csv = tmp_path / "s.csv"
    assert iwae_snapshots.main([str(tmp_path), "--points", "30", "--samples", "40", "--csv", str(out_csv),
                                "--figure", str(tmp_path / "f.png")]) == 0
    rows = list(csv.DictReader(open(out_csv)))
    assert [int(r["epoch"]) for r in rows] == [1, 3]
    assert {r["schedule"] for r in rows} == {"constant schedule, 3 epochs"}
    metrics = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    # CPU-hours: the trainer's cpu_seconds summed up to the snapshot's epoch
    assert float(rows[0]["cpu_hours"]) == round(metrics[0]["cpu_seconds"] / 3600, 6)
    assert float(rows[1]["cpu_hours"]) == round(sum(m["cpu_seconds"] for m in metrics) / 3600, 6)
    # the NLL is the importance-sampled one of the snapshot's own weights, with the same seed
    snap = ppvae.checkpoint.load(cell / "snapshots" / "epoch_1.pt")
    model.load_state_dict(snap["model_state"]), guide.load_state_dict(snap["guide_state"])
    model.eval(), guide.eval()
    log_px = ppvae.log_likelihood(model, guide, digits.test[:30], num_samples=40, seed=0)
    assert abs(float(rows[0]["nll"]) - float(-log_px.double().mean())) < 1e-3
    # cached: a second call reads epoch_N.nll.json instead of scoring again
    cache = cell / "snapshots" / "epoch_1.nll.json"
    assert json.loads(cache.read_text())["settings"] == {"points": 30, "samples": 40, "seed": 0}
    monkeypatch.setattr(iwae_snapshots.ppvae, "log_likelihood", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert iwae_snapshots.main([str(tmp_path), "--points", "30", "--samples", "40"]) == 0
    assert (tmp_path / "f.png").stat().st_size > 0


def test_epochs_without_cpu_seconds_count_at_the_median(tmp_path):
    rows = [{"epoch": 1, "time": 99.0}, {"epoch": 2, "time": 99.0, "cpu_seconds": 10.0},
            {"epoch": 3, "cpu_seconds": 20.0}, {"epoch": 4, "cpu_seconds": 30.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert iwae_snapshots.cpu_hours_at(tmp_path, 2) * 3600 == 20.0 + 10.0  # epoch 1 at the median, 20
    assert iwae_snapshots.cpu_hours_at(tmp_path, 4) * 3600 == 20.0 + 60.0


def test_a_finished_cosine_cell_adds_its_final_weights_and_earlier_rows_join(tmp_path, digits, monkeypatch):
    """A finished fast-N cell is scored at its last epoch too (from last.pt), labelled by its
    schedule; --include keeps an earlier CSV's rows unless a run given here has the same point."""
    cell = tmp_path / "dynamic" / "k1-L1"
    options = {"z_dims": [2], "hidden": [[8]]}
    model, guide, _ = ppvae.build("vae", digits.x_dim, options, seed=0)
    meta = {"family": "vae", "model_options": options, "x_dim": digits.x_dim, "dataset": {"root": None, "seed": 0}}
    ppvae.fit(model, guide, digits, epochs=3, batch_size=100, lr_schedule="cosine", out_dir=cell, meta=meta, progress=False,
              callbacks=[keep_snapshots(cell, (1,), model, guide)])
    monkeypatch.setattr(iwae_snapshots, "load_iwae_data", lambda *a, **k: digits)
    earlier = tmp_path / "earlier.csv"
    header = "cell,epoch,cpu_hours,nll,nll_se,points,samples,pareto_k_share\n"  # an older CSV: no schedule column
    earlier.write_text(header + "k1-L1,10,0.01,102.4,1.39,30,40,0.9\n")
    out_csv = tmp_path / "s.csv"
    assert iwae_snapshots.main([str(tmp_path), "--points", "30", "--samples", "40", "--include", str(earlier),
                                "--csv", str(out_csv)]) == 0
    rows = list(csv.DictReader(open(out_csv)))
    assert [(r["schedule"], int(r["epoch"])) for r in rows] == [("fast", 10), ("fast-3", 1), ("fast-3", 3)]
    model.eval(), guide.eval()  # the weights in memory are the final ones, as in last.pt
    log_px = ppvae.log_likelihood(model, guide, digits.test[:30], num_samples=40, seed=0)
    assert abs(float(rows[2]["nll"]) - float(-log_px.double().mean())) < 1e-3
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "k1-L1,10,0.01,102.4,1.39,500,5000,0.9\n")
    with pytest.raises(SystemExit, match="not comparable"):
        iwae_snapshots.main([str(tmp_path), "--points", "30", "--samples", "40", "--include", str(bad)])


def test_final_results_put_a_cells_own_evaluation_at_its_cpu_hours(tmp_path):
    cell = tmp_path / "dynamic" / "k1-L1"
    cell.mkdir(parents=True)
    (cell / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e, "cpu_seconds": 1800.0}) for e in (1, 2, 3)) + "\n")
    (cell / "result.json").write_text(json.dumps({"cell": "k1-L1", "budget": "fast-3", "nll": 88.9, "nll_se": 0.25,
                                                  "num_test": 10000, "epochs_trained": 3}))
    assert iwae_snapshots.final_results(tmp_path) == [{"cell": "k1-L1", "schedule": "fast-3", "nll": 88.9, "nll_se": 0.25,
                                                        "points": 10000, "cpu_hours": 1.5}]


def test_the_grid_csvs_fast_rows_become_stars_and_nothing_else_does(tmp_path):
    grid = tmp_path / "iwae_table1.csv"
    grid.write_text("cell,objective,k,layers,binarization,budget,epochs,nll,nll_se,active_units,paper_nll,cpu_hours\n"
                    "k1-L1,vae,1,1,dynamic,medium,44,95.86,0.27,25,86.76,0.143\n"
                    "iwae-k5-L1,iwae,5,1,dynamic,fast-500,500,86.61,0.23,20,85.54,1.61\n"
                    "k1-L1,vae,1,1,fixed,fast-600,600,90.0,0.3,14,88.71,1.2\n")
    assert iwae_snapshots.read_finals(grid) == [{"cell": "iwae-k5-L1", "schedule": "fast-500", "nll": 86.61, "nll_se": 0.23,
                                                 "points": 10000, "cpu_hours": 1.61}]
