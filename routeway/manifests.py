"""Read multi-document YAML manifests into typed resources, with problems people can act on.

Every problem names where it is (file, object, field) in one line, because `routeway
validate` runs in CI logs and pre-commit hooks where a traceback helps nobody. Parsing never
raises for bad input: it returns what parsed and what did not.

`skip_foreign` lets a caller point the loader at a whole GitOps folder: documents that are not
Routeway's (ConfigMaps, Flux and Argo CD objects, kustomization.yaml, Helm values files, …)
are counted and left out instead of reported. What Routeway reads is never skipped: its kinds
(even under a wrong apiVersion), anything in its API group, and Secrets. YAML that does not
parse stays a problem either way: a broken file could hide a Routeway object.

With `skip_foreign`, an ExternalSecret or a SealedSecret is read rather than skipped: it
declares the Secret its controller makes in the cluster (routeway.secretsources), which is
how Secrets kept out of Git are found. A SOPS-encrypted Secret is read like any other, by key
name (routeway.resources.Secret); a document SOPS encrypted whole, `kind` included, cannot be
told apart from a Routeway object and is reported, or counted as skipped with `skip_foreign`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias

import yaml
from pydantic import ValidationError

from routeway.gcpause import gc_paused
from routeway.resources import (
    API_VERSION,
    CUSTOM_KINDS,
    GROUP,
    KIND_MODELS,
    FieldError,
    ModelBackend,
    ModelClient,
    ModelGateway,
    ModelRoute,
    Secret,
    is_sops_encrypted,
)
from routeway.secretsources import DeclaredSecret, declared_secret
from routeway.translate import ObjectKey

Resource: TypeAlias = ModelBackend | ModelRoute | ModelGateway | ModelClient | Secret
YAML_SUFFIXES = (".yaml", ".yml", ".json")
SUPPORTED = f"{', '.join(k.KIND for k in CUSTOM_KINDS)} ({API_VERSION}) or Secret (v1)"
KEEP_READABLE = (
    "keep apiVersion, kind and metadata readable, as Flux documents it "
    "(sops --encrypt --encrypted-regex '^(data|stringData)$')"
)
NOT_AN_OBJECT = "without apiVersion/kind"
ENCRYPTED_WHOLE = "encrypted by SOPS, kind included"


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
    # Documents left out by skip_foreign, counted per "Kind (apiVersion)" or NOT_AN_OBJECT.
    skipped: Mapping[str, int] = field(default_factory=dict)
    foreign: int = 0  # documents that are not Routeway's, skipped or (without skip_foreign) reported
    # Secrets that ExternalSecret / SealedSecret documents make in the cluster (skip_foreign only).
    declared: tuple[DeclaredSecret, ...] = ()

    def describe_skipped(self) -> str:
        """`skipped 3 document(s) that are not Routeway's: 2 ConfigMap (v1), 1 …`"""
        total = sum(self.skipped.values())
        line = f"skipped {total} document(s) that are not Routeway's"
        if total:
            line += ": " + ", ".join(f"{n} {what}" for what, n in sorted(self.skipped.items()))
        return line


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
    if is_sops_encrypted(kind):
        raise ObjectError([("kind", f"{ENCRYPTED_WHOLE}: {KEEP_READABLE}")])
    if kind == "Secret" and api_version == "v1":
        model = Secret
    elif isinstance(kind, str) and kind in KIND_MODELS:
        if api_version != API_VERSION:
            raise ObjectError([("apiVersion", f"expected {API_VERSION} for {kind}, got {api_version!r}")])
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


def is_routeways(doc: object) -> bool:
    """Whether `skip_foreign` must still check this document. A kind of ours under another
    apiVersion and an unknown kind in our group are typos to report, not foreign objects;
    Secrets hold the credentials backends and gateways refer to."""
    if not isinstance(doc, Mapping):
        return False
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if isinstance(kind, str) and (kind in KIND_MODELS or kind == "Secret"):
        return True
    return isinstance(api_version, str) and api_version.split("/", 1)[0] == GROUP


def _foreign_label(doc: object) -> str:
    """How a skipped document is counted: `Kustomization (kustomize.config.k8s.io/v1beta1)`
    and `Kustomization (kustomize.toolkit.fluxcd.io/v1)` are different things."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("kind"), str) or not doc["kind"]:
        return NOT_AN_OBJECT
    if is_sops_encrypted(doc["kind"]):
        return ENCRYPTED_WHOLE
    api_version = doc.get("apiVersion")
    return f"{doc['kind']} ({api_version if isinstance(api_version, str) else 'no apiVersion'})"


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
    # SOPS ciphertext is no name to print (a document encrypted whole has it everywhere)
    kind = raw_kind if isinstance(raw_kind, str) and not is_sops_encrypted(raw_kind) else None
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    raw_name, raw_ns = meta.get("name"), meta.get("namespace")
    name = raw_name if isinstance(raw_name, str) and not is_sops_encrypted(raw_name) else None
    namespace = raw_ns if isinstance(raw_ns, str) else "default"
    label = f"{kind}/{name}" if kind and name else f"document {index}"
    return label, namespace, name


def load_manifests(
    paths: Sequence[str], stdin: IO[str] | None = None, *, skip_foreign: bool = False
) -> LoadResult:
    with gc_paused():  # YAML documents and models by the ten thousand, all kept: see gcpause
        return _load_manifests(paths, stdin, skip_foreign)


def _load_manifests(paths: Sequence[str], stdin: IO[str] | None, skip_foreign: bool) -> LoadResult:
    skipped: Counter[str] = Counter()
    foreign = 0
    declared: list[DeclaredSecret] = []
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
            source = _source(name, index)
            if not is_routeways(doc):
                foreign += 1
                if skip_foreign:
                    declaration = declared_secret(doc, source) if isinstance(doc, Mapping) else None
                    if declaration is not None:
                        declared.append(declaration)
                    else:
                        skipped[_foreign_label(doc)] += 1
                    continue
            if not isinstance(doc, Mapping):
                problems.append(
                    Problem(source, f"document {index}", "", f"expected a mapping, got {type(doc).__name__}")
                )
                continue
            label, namespace, obj_name = _object_label(doc, index)
            kind = doc.get("kind")
            try:
                obj = parse_object(doc)
            except ObjectError as exc:
                for fld, msg in exc.problems:
                    problems.append(Problem(source, label, fld, msg))
                # Still "exists": not reported as missing, nor assumed to be elsewhere.
                if isinstance(kind, str) and (kind in KIND_MODELS or kind == "Secret") and obj_name:
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
    return LoadResult(
        tuple(objects),
        invalid,
        tuple(problems),
        tuple(files),
        sources,
        dict(skipped),
        foreign,
        tuple(declared),
    )


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


def _documents(name: str, text: str, problems: list[Problem]) -> Iterator[tuple[int, object]]:
    """Yield (1-based index, document) per non-empty YAML document; `kind: List` is expanded
    into its mapping items. Documents that are not mappings are yielded too: whether they
    are a problem or skipped is the caller's decision."""
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
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                if isinstance(item, Mapping):
                    yield index, item
            continue
        yield index, doc
