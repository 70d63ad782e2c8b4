"""A stricter Kubernetes emulator on top of kmock 0.8, so the operator meets API-server habits.

kmock's emulator stores objects as plain JSON (see /work/shared/testing.md); an operator
tested against that alone would never meet what every real API server does. This subclass
adds, under kmock's own lock:

- server-filled metadata: ``uid``, a global ``resourceVersion`` counter, ``generation``
  (bumped only when something outside metadata/status changes; not on core or RBAC kinds,
  which have none on a real server), ``creationTimestamp``,
  ``generateName``;
- the ``status`` subresource: ``PATCH …/status`` changes only status, a main-resource
  patch ignores status;
- no-op patches change nothing (no new resourceVersion, no watch event), as on a real server;
- 409 on a stale ``metadata.resourceVersion`` precondition, PUT as a full replacement;
- ``watch=true|True|1``, ``resourceVersion`` on watches (no full replay after a list),
  ``timeoutSeconds``, label and field selectors on lists and watches;
- lists with ``kind``/``apiVersion``/``metadata.resourceVersion``;
- the ``/api/v1/namespaces[/name]`` URLs (a 500 in kmock 0.8);
- background owner-reference garbage collection on deletion.

It uses kmock internals (``_objects``, ``_buses``, ``_lock``), hence the ``kmock==0.8`` pin;
tests/operator/test_kmock_ext.py pins down every behaviour listed here.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
from kmock._internal import dicts, enums, parsing, references, rendering

NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces/?(?P<name>[^/]+)?/?$")
SERVER_META = ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace", "name")
NO_GENERATION_GROUPS = ("", "rbac.authorization.k8s.io")
"""As on a real server, core kinds (ConfigMap, Secret, Service, ServiceAccount, Event...) and RBAC
objects get no metadata.generation; Deployments, PDBs and custom resources do."""


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def match_labels(selector: str, labels: Mapping[str, str]) -> bool:
    """Equality- and set-based label selectors: a=b, a==b, a!=b, a in (x,y), a notin (x), a, !a."""
    for term in re.findall(r"(?:[^,(]|\([^)]*\))+", selector):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            present = key in labels and labels[key] in values
            if (op == "in") != present:
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def match_fields(selector: str, obj: Mapping[str, Any]) -> bool:
    """Field selectors on dotted paths (metadata.name=x, metadata.namespace!=y)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        path, value = (s.strip() for s in term.replace("==", "=").replace("!=", "=").split("=", 1))
        current: Any = obj
        for part in path.split("."):
            current = current.get(part) if isinstance(current, Mapping) else None
        if (str(current) == value) == negate:
            return False
    return True


@attrs.define(kw_only=True)
class RoutewayEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the server-side behaviours listed in the module docstring."""

    _rv: int = attrs.field(default=0, init=False)
    _kinds: dict[references.resource, str] = attrs.field(factory=dict, init=False)
    _builtin_reactions: int = attrs.field(default=0, init=False)
    _failures: list[list[Any]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._builtin_reactions = len(self._payloads)

    # ------------------------------------------------------------------ registration helpers

    def add_resource(
        self,
        group: str,
        version: str,
        plural: str,
        kind: str,
        *,
        namespaced: bool = True,
        subresources: tuple[str, ...] = (),
        shortnames: tuple[str, ...] = (),
    ) -> None:
        key = references.resource(group, version, plural)
        self.resources[key] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=namespaced,
            subresources=set(subresources),
            shortnames=set(shortnames),
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        )
        self._kinds[key] = kind

    def add_builtins(self) -> None:
        """The built-in kinds an operator of proxy Deployments touches."""
        for group, version, plural, kind, namespaced, subs in (
            ("", "v1", "namespaces", "Namespace", False, ("status",)),
            ("", "v1", "configmaps", "ConfigMap", True, ()),
            ("", "v1", "secrets", "Secret", True, ()),
            ("", "v1", "services", "Service", True, ("status",)),
            ("", "v1", "serviceaccounts", "ServiceAccount", True, ()),
            ("", "v1", "events", "Event", True, ()),
            ("", "v1", "pods", "Pod", True, ("status",)),
            ("apps", "v1", "deployments", "Deployment", True, ("status", "scale")),
            ("apps", "v1", "controllerrevisions", "ControllerRevision", True, ()),
            ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, ()),
            ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, ()),
            ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("status",)),
            ("coordination.k8s.io", "v1", "leases", "Lease", True, ()),
            (
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                False,
                (),
            ),
            ("kopf.dev", "v1", "kopfpeerings", "KopfPeering", True, ()),
            ("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False, ()),
        ):
            self.add_resource(group, version, plural, kind, namespaced=namespaced, subresources=subs)

    def add_crd(self, crd: Mapping[str, Any]) -> None:
        """Register a CustomResourceDefinition's served versions and store the CRD object."""
        spec = crd["spec"]
        names = spec["names"]
        for ver in spec["versions"]:
            if not ver.get("served", True):
                continue
            self.add_resource(
                spec["group"],
                ver["name"],
                names["plural"],
                names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                subresources=tuple(ver.get("subresources", {})),
                shortnames=tuple(names.get("shortNames", ())),
            )
        self.seed("apiextensions.k8s.io/v1/customresourcedefinitions", None, dict(crd))

    def seed(self, resource: str, namespace: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object directly (no request, not counted), with server metadata filled."""
        res = references.resource(resource)
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if namespace is not None:
            meta["namespace"] = namespace
        self._fill_new_meta(res, obj)
        self._objects[res, namespace, meta["name"]] = obj
        return obj

    def inject_failure(self, method: str, path_contains: str, status: int, times: int = 1) -> None:
        """Answer the next `times` matching requests with `status`, changing nothing
        (an API server that is overloaded, or refuses)."""
        self._failures.append([method.upper(), path_contains, status, times])

    def _injected(self, request: rendering.Request) -> int | None:
        for failure in self._failures:
            method, fragment, status, times = failure
            if times > 0 and request.method == method and fragment in request.url.path:
                failure[3] -= 1
                return int(status)
        return None

    @property
    def resource_version(self) -> int:
        return self._rv

    def requests(self) -> list[rendering.Request]:
        """Every request served so far, reads included."""
        return list(self._requests)

    def writes(self) -> list[rendering.Request]:
        """Every mutating request served so far (POST, PUT, PATCH, DELETE)."""
        return [r for r in self._requests if r.method in {"POST", "PUT", "PATCH", "DELETE"}]

    # ------------------------------------------------------------------ request parsing

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await self._parse(raw_request)
            self._requests.append(request)
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                raise e.__cause__ or e from None
        except Exception as e:
            if not self._errors:
                raise
            if not isinstance(e, kmock.KubernetesError):
                self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> rendering.Request:
        rid = len(self._requests)
        if m := NAMESPACES_PATH.match(raw_request.path):
            # kmock's path parser reads "namespaces" as the namespace marker and fails.
            name = m.group("name")
            method = enums.method(raw_request.method)
            body = await raw_request.read()
            try:
                data = await raw_request.json() if body else None
            except ValueError:
                data = None
            action = parsing.guess_k8s(
                parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name),
                method,
                dict(raw_request.query),
            )
            request = rendering.Request(
                id=rid,
                raw_request=raw_request,
                url=raw_request.url,
                method=raw_request.method,
                params=dict(raw_request.query),
                headers=dict(raw_request.headers),
                cookies=dict(raw_request.cookies),
                data=data,
                body=body,
                text=body.decode("utf-8", "replace"),
                action=action,
                resource=references.resource("", "v1", "namespaces"),
                namespace=None,
                name=name,
            )
        else:
            request = await rendering.Request._parse(raw_request, id=rid)
        watch = request.params.get("watch", "").lower()
        if request.method == "GET" and watch in {"true", "1"} and request.action != enums.action.WATCH:
            request = attrs.evolve(request, action=enums.action.WATCH)
        if request.method == "GET" and watch in {"false", "0"} and request.action == enums.action.WATCH:
            request = attrs.evolve(request, action=enums.action.LIST)
        return request

    # ------------------------------------------------------------------ mutations

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _has_status(self, res: references.resource) -> bool:
        return res in self.resources and "status" in self.resources[res].subresources

    def _fill_new_meta(self, res: references.resource, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        meta["creationTimestamp"] = _now()
        if res.group not in NO_GENERATION_GROUPS:
            meta["generation"] = 1
        kind = self._kinds.get(res)
        if kind and "kind" not in obj:
            obj["kind"] = kind
        if "apiVersion" not in obj:
            obj["apiVersion"] = f"{res.group}/{res.version}" if res.group else str(res.version)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        injected = self._injected(request)
        if injected is not None:
            raise kmock.KubernetesError(status=injected, reason="Injected", message="injected by the test")
        if res is not None:
            async with self._lock:
                if request.action == enums.action.CREATE:
                    await self._create(request, res)
                elif request.action == enums.action.UPDATE and request.name is not None:
                    await self._update(request, res)
                elif request.action == enums.action.DELETE and request.name is not None:
                    await self._delete(res, request.namespace, request.name)
                elif request.method == "PUT" and request.name is not None:
                    obj = await self._replace(request, res)
                    return aiohttp.web.json_response(obj)
        # kmock matches every reaction against the whole request history (quadratic in the
        # number of requests): serve plain API requests directly unless a test added reactions.
        serve = self._fast_path(request)
        if serve is not None:
            return await rendering.Response(payload=serve)(request)
        return await kmock.RawHandler._handle(self, request)

    def _fast_path(self, request: rendering.Request) -> Any:
        if request.resource is None or len(self._payloads) != self._builtin_reactions:
            return None
        if request.resource not in self.resources:
            return None
        return {
            enums.action.LIST: self._serve_list,
            enums.action.WATCH: self._serve_watch,
            enums.action.FETCH: self._serve_fetch,
            enums.action.CREATE: self._serve_create,
            enums.action.UPDATE: self._serve_update,
            enums.action.DELETE: self._serve_delete,
        }.get(request.action)  # type: ignore[arg-type]

    async def _create(self, request: rendering.Request, res: references.resource) -> None:
        if not isinstance(request.data, Mapping):
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="body must be an object")
        obj = copy.deepcopy(dict(request.data))
        meta = obj.setdefault("metadata", {})
        namespace = request.namespace or meta.get("namespace")
        if namespace is not None:
            meta["namespace"] = namespace
        if self._has_status(res):
            obj.pop("status", None)
        self._fill_new_meta(res, obj)
        name = meta.get("name")
        if not name:
            raise kmock.KubernetesError(status=422, reason="Invalid", message="metadata.name is required")
        key = (res, namespace, name)
        if key in self._objects and not self._objects[key].deleted:
            raise kmock.KubernetesError(status=409, reason="AlreadyExists", message=f"{name} already exists")
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        # The fallback create handler finds the object by the request's URL and body name.
        request.data.setdefault("metadata", {})["name"] = name
        await self._buses[res].put({"type": "ADDED", "object": copy.deepcopy(obj)})

    def _current(self, res: references.resource, namespace: str | None, name: str) -> dict[str, Any]:
        key = (res, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return copy.deepcopy(self._objects[key].raw)

    async def _update(self, request: rendering.Request, res: references.resource) -> None:
        assert request.name is not None
        old = self._current(res, request.namespace, request.name)
        body = request.data
        if isinstance(body, Mapping):
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and str(wanted_rv) != old["metadata"]["resourceVersion"]:
                raise kmock.KubernetesError(status=409, reason="Conflict", message="stale resourceVersion")
        try:
            patched = dict(dicts.patch_dict(copy.deepcopy(old), body if body is not None else {}))
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            # A failed `test` op (kopf's optimistic concurrency on resourceVersion) is a 422.
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
        new = self._constrain(res, request.subresource, old, patched)
        await self._store(res, request.namespace, request.name, old, new)

    async def _replace(self, request: rendering.Request, res: references.resource) -> dict[str, Any]:
        assert request.name is not None
        old = self._current(res, request.namespace, request.name)
        body = copy.deepcopy(dict(request.data or {}))
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and str(wanted_rv) != old["metadata"]["resourceVersion"]:
            raise kmock.KubernetesError(status=409, reason="Conflict", message="stale resourceVersion")
        new = self._constrain(res, request.subresource, old, body)
        return await self._store(res, request.namespace, request.name, old, new)

    def _constrain(
        self, res: references.resource, subresource: str | None, old: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply the status-subresource split and keep server-owned metadata."""
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            if self._has_status(res):
                if "status" in old:
                    result["status"] = old["status"]
                else:
                    result.pop("status", None)
        meta = result.setdefault("metadata", {})
        for field in SERVER_META:
            if field in old.get("metadata", {}):
                meta[field] = old["metadata"][field]
        return result

    async def _store(
        self,
        res: references.resource,
        namespace: str | None,
        name: str,
        old: dict[str, Any],
        new: dict[str, Any],
    ) -> dict[str, Any]:
        if new == old:
            return old  # a no-op write: no new resourceVersion, no watch event
        body_changed = {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in old.items() if k not in ("metadata", "status")
        }
        meta = new["metadata"]
        if body_changed and "generation" in meta:
            meta["generation"] = int(meta["generation"]) + 1
        meta["resourceVersion"] = self._next_rv()
        obj = self._objects[res, namespace, name]
        obj.history.append(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            await self._remove(res, namespace, name)
        else:
            await self._buses[res].put({"type": "MODIFIED", "object": copy.deepcopy(new)})
        return new

    async def _delete(self, res: references.resource, namespace: str | None, name: str) -> None:
        old = self._current(res, namespace, name)
        meta = old["metadata"]
        if meta.get("deletionTimestamp"):
            return
        if meta.get("finalizers"):
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            await self._store(res, namespace, name, old, new)
        else:
            await self._remove(res, namespace, name)

    async def _remove(self, res: references.resource, namespace: str | None, name: str) -> None:
        obj = self._objects[res, namespace, name]
        raw = copy.deepcopy(obj.raw)
        raw["metadata"]["resourceVersion"] = self._next_rv()
        obj.delete()
        await self._buses[res].put({"type": "DELETED", "object": raw})
        await self._collect_garbage(raw["metadata"].get("uid"))

    async def _collect_garbage(self, owner_uid: str | None) -> None:
        """Delete dependents whose owner references name the deleted uid (background policy)."""
        if not owner_uid:
            return
        dependents = [
            key
            for key, obj in self._objects.items()
            if not obj.deleted
            and any(ref.get("uid") == owner_uid for ref in obj.get("metadata", {}).get("ownerReferences", []))
        ]
        for res, namespace, name in dependents:
            if not self._objects[res, namespace, name].deleted:
                await self._delete(res, namespace, name)

    # ------------------------------------------------------------------ reads

    def _select(self, request: rendering.Request) -> list[dict[str, Any]]:
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        out = []
        for (res, namespace, name), obj in self._objects.items():
            if obj.deleted or res != request.resource:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            if request.name is not None and name != request.name:
                continue
            raw = obj.raw
            if labels and not match_labels(labels, raw.get("metadata", {}).get("labels") or {}):
                continue
            if fields and not match_fields(fields, raw):
                continue
            out.append(copy.deepcopy(raw))
        return out

    def _matches_event(self, request: rendering.Request, raw: Mapping[str, Any]) -> bool:
        meta = raw.get("metadata", {})
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        if labels and not match_labels(labels, meta.get("labels") or {}):
            return False
        return not (fields and not match_fields(fields, raw))

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._select(request)
            rv = str(self._rv)
        kind = self._kinds.get(request.resource, "")
        res = request.resource
        return {
            "apiVersion": f"{res.group}/{res.version}" if res.group else str(res.version),
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        assert request.resource is not None
        yield b""
        since_raw = request.params.get("resourceVersion", "")
        since = int(since_raw) if since_raw.isdigit() and since_raw != "0" else None
        timeout_raw = request.params.get("timeoutSeconds", "")
        deadline = asyncio.get_running_loop().time() + float(timeout_raw) if timeout_raw.isdigit() else None
        bus = self._buses[request.resource]
        async with self._lock:
            items = self._select(request)
            marker = await bus.mark()
        try:
            for raw in items:
                rv = int(raw["metadata"].get("resourceVersion", "0"))
                if since is None:
                    yield {"type": "ADDED", "object": raw}
                elif rv > since:
                    yield {"type": "MODIFIED", "object": raw}
            stream = bus.stream(since=marker).__aiter__()
            while True:
                remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(stream.__anext__(), remaining)
                except TimeoutError:
                    return
                raw = event.get("object", {})
                if since is not None and int(raw.get("metadata", {}).get("resourceVersion", "0")) <= since:
                    continue
                if self._matches_event(request, raw):
                    yield event
        finally:
            await bus.unmark(marker)
