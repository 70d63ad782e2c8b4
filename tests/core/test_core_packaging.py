"""The wheel ships every module of the source tree.

Why: `operator/` and `proxy/` are mapped to `routeway.operator` and `routeway.proxy` by hand in
pyproject.toml, so a new subpackage is not picked up by itself. The editable install the
tests run from finds it anyway; the wheel the image is built from would not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "routeway": ROOT / "routeway",
    "routeway/operator": ROOT / "operator",
    "routeway/proxy": ROOT / "proxy",
}


def test_wheel_contains_every_source_module(tmp_path: Path) -> None:
    # a copy of the sources: a build/ folder left in the checkout would be packed as it is
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", *SOURCES):
        origin = ROOT / name.removeprefix("routeway/")
        if origin.is_dir():
            shutil.copytree(origin, source / origin.name, ignore=shutil.ignore_patterns("__pycache__"))
        elif origin.exists():
            shutil.copy(origin, source / origin.name)
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        cwd=tmp_path,  # never the repository root: its operator/ would shadow the stdlib module
        timeout=300,
    )
    (wheel,) = out.glob("routeway-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    expected = set()
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" not in path.parts:
                expected.add(f"{prefix}/{path.relative_to(folder).as_posix()}")
    # routeway/ itself must not claim the mapped folders' files twice
    assert expected - shipped == set()
    assert "routeway/py.typed" in zipfile.ZipFile(wheel).namelist()
