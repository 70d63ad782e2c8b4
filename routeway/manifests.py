"""Read multi-document YAML manifests into typed resources, with problems people can act on.

Every problem names where it is (file, object, field) in one line, because `routeway
validate` runs in CI logs and pre-commit hooks where a traceback helps nobody. Parsing never
raises for bad input: it returns what parsed and what did not.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

import yaml
from pydantic import ValidationError

from routeway.gcpause import gc_paused
from routeway.resources import KIND_MODELS, FieldError, ModelBackend, ModelGateway, ModelRoute, Secret
from routeway.translate import ObjectKey

Resource: TypeAlias = ModelBackend | ModelRoute | ModelGateway | Secret
YAML_SUFFIXES = (".yaml", ".yml", ".json")
SUPPORTED = "ModelBackend, ModelRoute, ModelGateway (routeway.dev/v1alpha1) or Secret (v1)"


@dataclass(frozen=True, slots=True)
class Problem:
    source: str  # file path (or "<stdin>") and document number
    obj: str  # "ModelRoute/chat", or "document 3" when the object has no usable name
    field: str  # dotted path, "" when the whole object is concerned
    message: str

    def __str__(self) -> str:
        where = f"{self.obj}: {self.field}" if self.field else self.obj
        return f"{self.source}: {where}: {self.message}"


class ObjectError(ValueError):
    """An object that could not be parsed; `problems` has one (field, message) per error."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadResult:
    objects: tuple[Resource, ...]
    invalid: Mapping[ObjectKey, str]  # named objects that failed to parse (still "exist")
    problems: tuple[Problem, ...]
    files: tuple[str, ...]
    sources: Mapping[ObjectKey, str]  # where each object came from, for messages


def format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _error_path(err: Mapping[str, Any]) -> str:
    """pydantic's location, extended by the field a cross-field rule (FieldError) names."""
    path = format_loc(err["loc"])
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        suffix = cause.field
        return f"{path}.{suffix}" if path and not suffix.startswith("[") else f"{path}{suffix}"
    return path


def _clean_message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def parse_object(body: Mapping[str, Any]) -> Resource:
    """Parse one API object; raises ObjectError naming every bad field."""
    kind = body.get("kind")
    api_version = body.get("apiVersion")
    model: type[Resource]
    if kind == "Secret" and api_version == "v1":
        model = Secret
    elif isinstance(kind, str) and kind in KIND_MODELS:
        if api_version != "routeway.dev/v1alpha1":
            raise ObjectError(
                [("apiVersion", f"expected routeway.dev/v1alpha1 for {kind}, got {api_version!r}")]
            )
        model = KIND_MODELS[kind]  # type: ignore[assignment]
    else:
        raise ObjectError(
            [("kind", f"unsupported kind {kind!r} (apiVersion {api_version!r}); expected {SUPPORTED}")]
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        # Dict-keyed loc parts come from pydantic as strings; list indexes as ints.
        raise ObjectError(
            [(_error_path(e), _clean_message(e)) for e in exc.errors(include_url=False)]
        ) from None


def iter_files(paths: Sequence[str]) -> Iterator[str]:
    """Expand directories (recursively, sorted) into YAML files; `-` stands for stdin."""
    for raw in paths:
        if raw == "-":
            yield raw
            continue
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix in YAML_SUFFIXES and not child.name.startswith("."):
                    yield str(child)
        else:
            yield raw


def _object_label(doc: Mapping[str, Any], index: int) -> tuple[str, str, str | None]:
    raw_kind, raw_meta = doc.get("kind"), doc.get("metadata")
    kind = raw_kind if isinstance(raw_kind, str) else None
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    raw_name, raw_ns = meta.get("name"), meta.get("namespace")
    name = raw_name if isinstance(raw_name, str) else None
    namespace = raw_ns if isinstance(raw_ns, str) else "default"
    label = f"{kind}/{name}" if kind and name else f"document {index}"
    return label, namespace, name


def load_manifests(paths: Sequence[str], stdin: IO[str] | None = None) -> LoadResult:
    with gc_paused():  # YAML documents and models by the ten thousand, all kept: see gcpause
        return _load_manifests(paths, stdin)


def _load_manifests(paths: Sequence[str], stdin: IO[str] | None) -> LoadResult:
    objects: list[Resource] = []
    invalid: dict[ObjectKey, str] = {}
    problems: list[Problem] = []
    sources: dict[ObjectKey, str] = {}
    files: list[str] = []

    for file in iter_files(paths):
        files.append(file)
        if file == "-":
            text, name = (stdin or sys.stdin).read(), "<stdin>"
        else:
            name = file
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(
                    Problem(name, "file", "", f"cannot read: {getattr(exc, 'strerror', None) or exc}")
                )
                continue
        for index, doc in _documents(name, text, problems):
            label, namespace, obj_name = _object_label(doc, index)
            source = _source(name, index)
            kind = doc.get("kind")
            try:
                obj = parse_object(doc)
            except ObjectError as exc:
                for fld, msg in exc.problems:
                    problems.append(Problem(source, label, fld, msg))
                if isinstance(kind, str) and kind in KIND_MODELS and obj_name:
                    invalid[ObjectKey(kind, namespace, obj_name)] = str(exc)
                continue
            key = ObjectKey(obj.kind, obj.namespace, obj.name)
            if key in sources or key in invalid:
                problems.append(
                    Problem(
                        source,
                        label,
                        "metadata.name",
                        f"defined twice (also in {sources.get(key, 'an invalid document')})",
                    )
                )
                continue
            sources[key] = source
            objects.append(obj)
    return LoadResult(tuple(objects), invalid, tuple(problems), tuple(files), sources)


# libyaml's parser when PyYAML was built with it: 8x faster on a 4 MB manifest (bench/).
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeBase):  # type: ignore[valid-type,misc]
    """Safe loader that refuses duplicate keys: `{weight: 1, weight: 0}` is a typo to report,
    not a silent last-wins (the API server's strict field validation rejects it too)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _source(name: str, index: int) -> str:
    """`file` for a file's first document, `file#N` for the N-th: short in the common case."""
    return f"{name}#{index}" if index > 1 else name


def _documents(name: str, text: str, problems: list[Problem]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Yield (1-based index, mapping) per YAML document; `kind: List` is expanded."""
    try:
        docs = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problems.append(Problem(name, "file", "", f"malformed YAML{where}: {problem}"))
        return
    index = 0
    for doc in docs:
        if doc is None:
            continue
        index += 1
        if not isinstance(doc, Mapping):
            problems.append(
                Problem(
                    _source(name, index),
                    f"document {index}",
                    "",
                    f"expected a mapping, got {type(doc).__name__}",
                )
            )
            continue
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                if isinstance(item, Mapping):
                    yield index, item
            continue
        yield index, doc
