"""The wheel ships every module of the source tree.

Why: the three import packages live in three folders (`routeway/`, `operator/routeway_operator/`,
`proxy/routeway_proxy/`) found by pyproject's package discovery. The editable install the tests
run from maps whole folders, so a module the discovery missed would still import here; the
wheel the image is built from would lack it.
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
    "routeway_operator": ROOT / "operator" / "routeway_operator",
    "routeway_proxy": ROOT / "proxy" / "routeway_proxy",
}


def test_wheel_contains_every_source_module(tmp_path: Path) -> None:
    # a copy of the sources: a build/ folder left in the checkout would be packed as it is
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in SOURCES.values():
        target = source / folder.relative_to(ROOT)
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__"))
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
        cwd=source,  # the source root, as the Dockerfile builds: nothing there shadows the stdlib
        timeout=300,
    )
    (wheel,) = out.glob("routeway-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    expected = set()
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" not in path.parts:
                expected.add(f"{prefix}/{path.relative_to(folder).as_posix()}")
    assert expected - shipped == set()
    assert shipped - expected == set()
    for package in SOURCES:
        assert f"{package}/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_nothing_at_the_root_shadows_the_standard_library() -> None:
    """`python -m ...` started at the root puts the root first on sys.path: a module or a package
    there named like a standard-library module would be imported instead of it (an
    `operator/__init__.py` once broke the Dockerfile's build). Folders without __init__.py are
    harmless: the standard library's module still wins over a namespace folder."""
    for entry in ROOT.iterdir():
        name = entry.stem if entry.suffix == ".py" else entry.name
        if name in sys.stdlib_module_names:
            assert entry.is_dir() and not (entry / "__init__.py").exists(), entry


def test_python_m_works_from_the_root() -> None:
    """As the Dockerfile's `python -m pip wheel .` runs it: without site (-S), nothing has
    imported `operator` before runpy does, so a shadowing folder would break it."""
    subprocess.run(
        [sys.executable, "-S", "-m", "platform"], cwd=ROOT, capture_output=True, check=True, timeout=60
    )
