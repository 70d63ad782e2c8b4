"""Objects deleted while kopf was not watching: found after a re-list, hidden from the indexes.

kopf lists a kind afresh whenever its watch cannot resume (``410 Gone`` once etcd compacted
the version it would resume from, an ``ERROR`` event, a list or watch that failed) and then
watches from that new list. An object deleted in between gets no DELETED event and is simply
missing from the new list, but kopf (1.45) never drops what its index handlers returned for
it: the operator would keep serving a deleted route, and a deleted Secret's keys, until it
restarts.

A listing shows itself to event handlers as events of type None. After a burst of them
(`seen`), one LIST of each kind from the API says which indexed keys no longer exist;
those keys are hidden from every lookup of the indexes (`HidingIndex`: the entries under the
key, and the key among the values of reverse indexes) and handled as deletions by the caller.
A later event for the key (the object re-created) shows it again. Nothing is written: a
restart or a re-list of an unchanged cluster costs one LIST per kind. A kind that lists empty
shows no event: when it alone was re-listed, the periodic resync (`recheck`) finds what it
missed.

The operator's own children have the same blind spot with another consequence: the applier
remembers what it wrote (to skip even the GET next time), so a child deleted unseen would
stay deleted until the next resync. After a child kind is re-listed, one LIST of the owned
objects of that kind lets the applier forget every path it remembers where nothing exists
now; the gateways are then reconciled, which re-creates exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from routeway.translate import NsName
from routeway_operator.kube import ApiError, KubeApi, path_for

log = logging.getLogger("routeway.operator.relist")

QUIET = 1.0  # seconds without listed objects of a kind before its audit (a listing is a burst)
RETRY = 5.0  # seconds before an audit that failed is tried again
MAX_WAIT = 10.0  # seconds a reconcile waits for pending audits at most

Deleted = Callable[[str, NsName], None]
ChildrenListed = Callable[[str, set[str]], None]  # plural, paths that exist
CHILD = "child:"
ALL = "all"
NOTHING: AbstractSet[NsName] = frozenset()


class HidingIndex(Mapping[Any, Iterable[Any]]):
    """A live view of a kopf index without the keys of `kind` that `Ghosts` hides: as the
    index's own keys (`by_key`), or among its values (reverse indexes hold object keys)."""

    def __init__(
        self, index: Mapping[Any, Iterable[Any]], ghosts: Ghosts, kind: str, *, by_key: bool
    ) -> None:
        self._index = index
        self._ghosts = ghosts
        self._kind = kind
        self._by_key = by_key

    def get(self, key: Any, default: Any = None) -> Any:
        store = self._index.get(key)
        hidden = self._ghosts.of(self._kind)
        if store is None or not hidden:  # the common case: nothing hidden, no copy
            return default if store is None else store
        if self._by_key:
            return default if key in hidden else store
        kept = [value for value in store if value not in hidden]
        return kept if kept else default

    def __getitem__(self, key: Any) -> Iterable[Any]:
        store = self.get(key)
        if store is None:
            raise KeyError(key)
        result: Iterable[Any] = store
        return result

    def __iter__(self) -> Iterator[Any]:
        hidden = self._ghosts.of(self._kind) if self._by_key else NOTHING
        return (key for key in self._index if key not in hidden)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Ghosts:
    """Keys per kind that an audit found gone while an index still holds them."""

    def __init__(self) -> None:
        self._hidden: dict[str, set[NsName]] = {}

    def of(self, kind: str) -> AbstractSet[NsName]:
        return self._hidden.get(kind) or NOTHING

    def hide(self, kind: str, key: NsName) -> None:
        self._hidden.setdefault(kind, set()).add(key)

    def reveal(self, kind: str, key: NsName) -> None:
        hidden = self._hidden.get(kind)
        if hidden is not None:
            hidden.discard(key)


class RelistAudit:
    """Schedules the audits after kopf re-listed anything (or at a resync), and runs them."""

    def __init__(
        self,
        api: KubeApi,
        resources: Mapping[str, tuple[str, str]],
        indexes: Mapping[str, Mapping[Any, Iterable[Any]]],
        namespaces: Iterable[str],
        deleted: Deleted,
        *,
        ghosts: Ghosts | None = None,
        children: Mapping[str, str] | None = None,
        children_listed: ChildrenListed | None = None,
        child_selector: str = "",
    ) -> None:
        """`resources`: kind → (apiVersion, plural); `indexes`: kind → kopf's own index keyed
        by (namespace, name); `namespaces`: the watched ones (none: cluster-wide); `ghosts`:
        shared with the `HidingIndex` views the reconciles read. `children`: plural →
        apiVersion of the kinds the operator writes; after one of them is re-listed, the paths
        of those that exist (`child_selector` selects them) go to `children_listed`."""
        self.ghosts = ghosts if ghosts is not None else Ghosts()
        self._children = dict(children or {})
        self._children_listed = children_listed
        self._child_selector = child_selector
        self.audits = 0  # completed audits, for tests
        self._api = api
        self._resources = dict(resources)
        self._indexes = dict(indexes)
        self._namespaces = tuple(namespaces)
        self._deleted = deleted
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: set[str] = set()  # kinds listed and not yet audited
        self._listing = False  # a re-list's events still arrive: its audits are not yet due
        self._initial = True  # until the first audits: kopf's first listing cannot hide deletions
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def initial(self) -> bool:
        """Whether kopf's first listing is still being taken (its audits not yet started)."""
        return self._initial

    async def settled(self, within: float = MAX_WAIT) -> None:
        """Until no listed kind awaits its audit (at most `within` seconds: an API that
        cannot be listed must not stop every reconcile). A reconcile waits here so that it
        never renders a snapshot that still holds what the audit is about to find gone."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), within)

    def seen(self, kind: str, key: NsName, event_type: str | None) -> None:
        """Every event of an audited kind: a listed object (type None) schedules the audits;
        any event but a deletion shows a hidden key again (the object exists)."""
        if event_type != "DELETED":
            self.ghosts.reveal(kind, key)
        if event_type is None:
            self.recheck(postpone=True)

    def seen_child(self, plural: str, event_type: str | None) -> None:
        """An event of an owned child: a listed one (type None) schedules the audits."""
        if event_type is None:
            self.recheck(postpone=True)

    def recheck(self, *, postpone: bool = False) -> None:
        """Audit every kind once things are quiet. After any re-list, not only the kind seen
        re-listed: a kind whose objects were all deleted meanwhile lists empty and shows no
        event, and watches mostly break together (an API server restarting). `postpone`: a
        listing goes on (its events re-arm the wait, and reconciles wait for the audits);
        else (a resync) an audit already due stays due, and nothing waits for it."""
        if postpone and self._initial:
            self._arm(ALL, QUIET)  # kopf's first listing: the indexes are built from it
        elif postpone:
            self._listing = True
            self._pending.update(self._resources)
            self._settled.clear()
            self._arm(ALL, QUIET)
        elif ALL not in self._timers:
            self._arm(ALL, QUIET)

    def _arm(self, kind: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        timer = self._timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
        self._timers[kind] = loop.call_later(delay, self._start, kind)

    def _start(self, kind: str) -> None:
        self._timers.pop(kind, None)
        if kind == ALL:
            self._listing = self._initial = False
            for each in [*self._resources, *(CHILD + plural for plural in self._children)]:
                retry = self._timers.pop(each, None)
                if retry is not None:
                    retry.cancel()
                self._start(each)
            return
        work = self.audit_children(kind.removeprefix(CHILD)) if kind.startswith(CHILD) else self.audit(kind)
        task = asyncio.get_running_loop().create_task(work, name=f"relist audit {kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def audit(self, kind: str) -> None:
        """Hide and report as deleted every key the index holds that the API no longer has."""
        index = self._indexes[kind]
        indexed = {key for key in index if key not in self.ghosts.of(kind)}
        try:
            live = await self._list(kind)
        except ApiError as exc:
            self._failed(kind, exc)
            self._done(kind)  # reconciles do not wait for an API that cannot answer
            return
        for key in sorted(indexed - live):
            if key in index:  # still indexed: its deletion was never seen
                log.info("%s %s/%s was deleted while the watch was down: forgotten", kind, *key)
                self.ghosts.hide(kind, key)
                self._deleted(kind, key)
        self.audits += 1
        self._done(kind)

    def _done(self, kind: str) -> None:
        if not self._listing:  # not listed again meanwhile
            self._pending.discard(kind)
            if not self._pending:
                self._settled.set()

    def _failed(self, kind: str, exc: ApiError) -> None:
        """A transient failure is tried again soon; any other (403: no right to list) is left
        to the next resync's recheck, with one warning each time."""
        if exc.transient:
            log.warning("could not list %s to find deletions missed: %s; again in %.0fs", kind, exc, RETRY)
            self._arm(kind, RETRY)
        else:
            log.warning("could not list %s to find deletions missed: %s; again at the next resync", kind, exc)

    async def audit_children(self, plural: str) -> None:
        """The paths of the owned objects of a kind that exist, for the applier to forget
        what it believes it wrote where nothing is any more (a child deleted unseen)."""
        api_version = self._children[plural]
        try:
            items = await self._items(api_version, plural, {"labelSelector": self._child_selector})
        except ApiError as exc:
            self._failed(CHILD + plural, exc)
            return
        if self._children_listed is not None:
            self._children_listed(plural, {path_for(api_version, plural, ns, name) for ns, name in items})
        self.audits += 1

    async def _list(self, kind: str) -> set[NsName]:
        api_version, plural = self._resources[kind]
        return await self._items(api_version, plural, {})

    async def _items(self, api_version: str, plural: str, params: Mapping[str, str]) -> set[NsName]:
        live: set[NsName] = set()
        # kopf also takes namespace patterns (team-*): those are listed cluster-wide
        patterned = any(c in ns for ns in self._namespaces for c in "*?[!")
        for namespace in (None,) if patterned or not self._namespaces else self._namespaces:
            path = path_for(api_version, plural, namespace)
            listing = await self._api.get(path, params=params or None)
            if listing is None:  # the kind itself is gone (its CRD deleted): decide nothing
                raise ApiError(404, "NotFound", f"{path} cannot be listed")
            for item in listing.get("items") or []:
                meta = item.get("metadata") or {}
                live.add((str(meta.get("namespace") or "default"), str(meta.get("name"))))
        return live

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
