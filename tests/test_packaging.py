"""A wheel (and so every non-editable install) carries the embedded models: the registry, the
default separator and the default detector, found by ``cusep models list`` from the install."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)], capture_output=True, text=True, cwd=out)
    if proc.returncode != 0 and "No module named pip" in proc.stderr:
        pytest.skip("pip is not available")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(out.glob("cusep-*.whl"))


def test_wheel_holds_the_registry_and_its_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    registry = json.loads((ROOT / "models" / "registry.json").read_text())
    assert "cusep/models/registry.json" in names
    for key in ("default", "detector"):
        folder = registry[registry[key]]["path"]
        for file in ("config.json", "model.safetensors", "README.md"):
            assert f"cusep/models/{folder}/{file}" in names


def test_installed_wheel_lists_and_loads_its_default_model(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = ("import json, cusep, cusep.checkpoint as c; "
            "print(json.dumps([cusep.__file__, str(c.resolve_model(None).path), "
            "str(c.load_detector(None, device='cpu')[1].path)]))")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    package, model, detector = json.loads(proc.stdout)
    assert package.startswith(str(target))  # the installed copy, not the repository's
    assert model.startswith(str(target)) and detector.startswith(str(target))
    listed = subprocess.run([sys.executable, "-m", "cusep", "models", "list", "--json"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = json.loads(listed.stdout)
    registry = json.loads((ROOT / "models" / "registry.json").read_text())
    assert {registry["default"], registry["detector"]} <= {r["name"] for r in rows}
