"""Every tutorial runs, in its quick mode (PPVAE_QUICK=1). New tutorials are picked up by the glob."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))


def test_there_are_tutorials():
    assert TUTORIALS, "tutorials/ holds no .py files"


DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs_quick(path, tmp_path):
    if 'load_dataset("mnist"' in path.read_text() and not (DATA / "MNIST").exists() and "PPVAE_DATA" not in os.environ:
        pytest.skip(f"{path.name} needs MNIST: staged datasets not found at {DATA} and PPVAE_DATA unset")
    env = dict(os.environ, PPVAE_QUICK="1", PPVAE_TUTORIAL_OUT=str(tmp_path), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
