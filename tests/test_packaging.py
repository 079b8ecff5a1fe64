"""ppvae.models / ppvae.guides are installed under the ppvae namespace (setuptools package-dir)."""

import subprocess
import sys


def test_import_from_outside_the_checkout(tmp_path):
    code = (
        "import ppvae, ppvae.models, ppvae.guides, ppvae.models.vae, ppvae.guides.vae, pathlib;"
        "import sys; assert 'models' not in sys.modules and 'guides' not in sys.modules;"
        "print(pathlib.Path(ppvae.models.__file__).parent.name, pathlib.Path(ppvae.guides.__file__).parent.name)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["models", "guides"]


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("ppvae") or str(__import__("pathlib").Path(sys.executable).parent / "ppvae")
    r = subprocess.run([exe, "list"], capture_output=True, text=True)
    assert r.returncode == 0 and "vae" in r.stdout


def test_every_subpackage_is_listed_in_pyproject():
    """pyproject lists packages explicitly (models/ and guides/ are mapped into ppvae): a new
    subpackage missing there would import from the checkout but vanish from a built wheel."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"ppvae." + p.parent.relative_to(root / "ppvae").as_posix().replace("/", ".") for p in (root / "ppvae").glob("*/**/__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert {"ppvae", "ppvae.models", "ppvae.guides"} <= listed
