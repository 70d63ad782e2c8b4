"""Running the built image with buildah, for the image tests of tests/process and tests/operator.

This folder is on sys.path for every test (pyproject's pytest `pythonpath`), so both test folders
share these helpers. `scripts/test-image` builds the image and sets ROUTEWAY_IMAGE; without it
the image tests are skipped (`SKIP_WITHOUT_IMAGE`), and with it a missing buildah is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

IMAGE = os.environ.get("ROUTEWAY_IMAGE", "")
USER = "10001:10001"  # the chart's runAsUser:runAsGroup
SKIP_WITHOUT_IMAGE = pytest.mark.skipif(
    not IMAGE, reason="set ROUTEWAY_IMAGE (scripts/test-image builds one)"
)


def buildah(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    if shutil.which("buildah") is None:
        pytest.fail("ROUTEWAY_IMAGE is set but buildah is missing (scripts/build-image installs it)")
    return subprocess.run(
        ["buildah", "--storage-driver", "vfs", *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def new_container() -> str:
    """A working container of the image (vfs copies the whole image: make few)."""
    return buildah("from", IMAGE).stdout.strip()


def run_args(
    container: str, *command: str, volumes: tuple[str, ...] = (), env: tuple[str, ...] = ()
) -> list[str]:
    """`buildah run` of `command` as the chart's user, with `host:container[:ro]` volumes and
    `NAME=value` environment."""
    options = [arg for volume in volumes for arg in ("--volume", volume)]
    options += [arg for entry in env for arg in ("--env", entry)]
    return ["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot", "--user", USER,
            *options, container, "--", *command]  # fmt: skip


def files_of(container: str, skip: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Every regular file and link of the container's root with its (mtime, size); /tmp (the
    chart's emptyDir), the kernel's folders, the runtime's /run and `skip` (volume mountpoints)
    are left out: compared before and after a run, it shows what the run wrote to the image."""
    root = Path(buildah("mount", container).stdout.strip())
    left_out = {"proc", "sys", "dev", "tmp", "run", *(s.strip("/") for s in skip)}
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if (relative / d).as_posix() not in left_out]
        for name in names:
            info = (Path(folder) / name).lstat()
            found[(relative / name).as_posix()] = (info.st_mtime_ns, info.st_size)
    return found
