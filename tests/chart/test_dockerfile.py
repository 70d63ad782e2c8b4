"""The image recipe, checked without a Docker engine (none runs here or in CI).

Covers: the Dockerfile's reviewable properties (two stages, pinned base, no remote ADD, pip
without cache, numeric non-root USER equal to the chart's runAsUser, exec-form ENTRYPOINT,
the exposed ports), the build context .dockerignore leaves (a small matcher with Docker's
last-match-wins semantics), and install-ability: the files the builder stage COPYs, taken
through .dockerignore, build a wheel holding routeway/, routeway/operator/ and routeway/proxy/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from .conftest import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arguments, re.IGNORECASE)
            assert match, line
            stages.append(Stage(base=match[1], name=match[2], instructions=[]))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede FROM: {line}"
            name, _, default = arguments.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments))
    return args, stages


def resolve(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], image)


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_multi_stage_on_a_pinned_slim_base(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    args, stages = dockerfile
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    for stage in (builder, final):
        image = resolve(stage.base, args)
        repository, _, tag = image.partition(":")
        assert repository == "python" and tag.startswith("3.11-slim"), image
        assert tag != "latest"


def test_no_remote_or_archive_add(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """ADD fetches URLs and unpacks archives implicitly; COPY is explicit and reviewable."""
    _, stages = dockerfile
    for stage in stages:
        assert stage.all("ADD") == [], stage.all("ADD")
        for copy in stage.all("COPY"):
            assert "://" not in copy


def test_pip_never_keeps_a_cache(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    installs = [
        run for stage in stages for run in stage.all("RUN") if "pip install" in run or "pip wheel" in run
    ]
    assert installs
    for run in installs:
        for command in re.split(r"&&", run):
            if re.search(r"pip (install|wheel)", command):
                assert "--no-cache-dir" in command, command


def test_builder_copies_the_package_sources(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """pyproject maps routeway.operator -> operator/ and routeway.proxy -> proxy/: all are needed."""
    builder = dockerfile[1][0]
    sources = {source for copy in builder.all("COPY") for source in copy.split()[:-1]}
    assert {"pyproject.toml", "routeway/", "operator/", "proxy/"} <= sources


def test_final_stage_holds_only_the_built_venv(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    final = dockerfile[1][-1]
    copies = final.all("COPY")
    assert copies and all(copy.startswith("--from=builder ") for copy in copies), copies
    assert not any("apt-get" in run or "pip" in run for run in final.all("RUN"))


def test_runs_as_the_charts_numeric_non_root_user(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    final = dockerfile[1][-1]
    user = final.all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert gid.isdigit() and int(gid) != 0, user
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["securityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)


def test_entrypoint_ports_and_build_instructions(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    final = dockerfile[1][-1]
    assert final.all("ENTRYPOINT") == ['["routeway"]']
    (cmd,) = final.all("CMD")
    assert cmd.startswith("["), "exec form, so signals reach the process"
    exposed = {port for line in final.all("EXPOSE") for port in line.split()}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert {str(values["health"]["port"]), str(values["metrics"]["port"])} <= exposed
    assert "docker build -t routeway:dev ." in DOCKERFILE.read_text()


# ---------------------------------------------------------------------------- .dockerignore


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excluded?, regex) per pattern, in file order; the last matching pattern decides."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        rules.append((not include, re.compile(regex)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker matches a pattern against the path and each of its parent directories."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for exclude, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = exclude
    return not excluded


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("pyproject.toml", True),
        ("README.md", True),
        ("routeway/cli.py", True),
        ("operator/__init__.py", True),
        ("proxy/__init__.py", True),
        (".venv/bin/python", False),
        ("tools/bin/helm", False),
        ("tests/chart/test_dockerfile.py", False),
        ("bench/out/results.json", False),
        (".git/HEAD", False),
        ("routeway/__pycache__/cli.cpython-311.pyc", False),
        ("routeway.egg-info/PKG-INFO", False),
        ("charts/routeway/values.yaml", False),
        ("kubeconfig", False),
    ],
)
def test_build_context(path: str, expected: bool) -> None:
    assert in_context(path, dockerignore_rules()) is expected


# ---------------------------------------------------------------------------- install-ability


def stage_builder_context(target: Path) -> None:
    """Copies what the builder's COPY lines name, filtered by .dockerignore, into target."""
    rules = dockerignore_rules()
    builder = parse_dockerfile(DOCKERFILE.read_text())[1][0]
    for copy in builder.all("COPY"):
        *sources, destination = copy.split()
        for source in sources:
            for match in sorted(ROOT.glob(source.rstrip("/"))):
                files = [match] if match.is_file() else sorted(p for p in match.rglob("*") if p.is_file())
                for file in files:
                    relative = file.relative_to(ROOT).as_posix()
                    if not in_context(relative, rules):
                        continue
                    inside = file.relative_to(match) if match.is_dir() else Path(file.name)
                    out = target / destination / inside
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, out)


def build_requirements_installed(pyproject: Path) -> bool:
    """True when this interpreter already satisfies [build-system].requires."""
    requires = tomllib.loads(pyproject.read_text())["build-system"]["requires"]
    for line in requires:
        requirement = Requirement(line)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


def test_builder_context_builds_a_wheel_with_all_three_packages(tmp_path: Path) -> None:
    context = tmp_path / "context"
    stage_builder_context(context)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        ".",
        "--no-deps",
        "--quiet",
        "--wheel-dir",
        str(tmp_path / "wheels"),
    ]
    if build_requirements_installed(context / "pyproject.toml"):
        # Same backend version the image would fetch, without a fresh isolated env (~8 s).
        command.append("--no-build-isolation")
    result = subprocess.run(command, cwd=context, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("routeway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in (
        ("routeway", "routeway"),
        ("operator", "routeway/operator"),
        ("proxy", "routeway/proxy"),
    ):
        sources = sorted(p.name for p in (context / folder).glob("*.py"))
        assert "__init__.py" in sources
        missing = [name for name in sources if f"{package}/{name}" not in names]
        assert missing == [], f"{folder}/ files missing from the wheel: {missing}"
    assert "routeway/py.typed" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "routeway = routeway.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
