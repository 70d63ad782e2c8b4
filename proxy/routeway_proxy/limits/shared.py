"""The store of one process group: a fixed-size table in a shared file, under `flock`.

Why: `routeway serve/proxy --workers N` runs N processes behind one port, and the kernel
spreads connections over them; a budget held per worker would admit N times the limit. The
table lives in a file of the group's temporary directory (like the metric files, in
/dev/shm when there is one); every process — the supervisor that creates it, each worker that
attaches by path — maps it, and a reservation reads, decides (`budget.decide`) and writes its
slots while holding `flock` on the file, so no two processes can both take the last of a
budget. flock belongs to the open file, so each process opens its own; a process that dies
holding it releases it with its file descriptors, so a crashed worker cannot wedge the group.

Layout: a 64-byte header (magic, version, slot count), then `slots` slots of 48 bytes:
a 16-byte BLAKE2b digest of (key, kind), then used, updated, limit (doubles) and the kind. Keys
hash to a home slot and probe linearly; a slot whose digest matches in full is the key's
(a 128-bit digest makes a false match negligible; a shorter comparison would merge keys). A
slot is never emptied, so probe chains never break; instead a slot whose budget is full again
(the same as absent) is taken over by a new key that finds no slot of its own. When `MAX_PROBE`
slots from the home are all in use by live budgets the table is full: `StoreUnavailable`, and
the gateway's failure mode decides (`limiter.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence

from routeway_proxy.limits.budget import (
    Charge,
    Decision,
    Demand,
    LimitKind,
    decide,
    peek,
    settle_state,
    used_at,
)
from routeway_proxy.limits.local import Clock, StoreUnavailable

MAGIC = b"RWLIMIT1"
HEADER = struct.Struct("<8sII48x")  # magic, version, slot count: 64 bytes
SLOT = struct.Struct("<16sdddB7x")  # digest, used, updated, limit, kind: 48 bytes
VALUES = struct.Struct("<dddB")  # the slot after its digest
EMPTY = bytes(16)
MAX_PROBE = 64
DEFAULT_SLOTS = 65536  # 3 MiB of address space; tmpfs holds only the pages touched
TABLE_ENV = "ROUTEWAY_LIMITS_TABLE"
"""Where a supervisor tells its workers the table's path (inherited by spawned workers)."""


def digest_of(key: str, kind: LimitKind) -> bytes:
    return hashlib.blake2b(f"{kind.value}\0{key}".encode(), digest_size=16).digest()


def make_table(path: str, slots: int = DEFAULT_SLOTS) -> str:
    """Make a new, empty table at `path` (the supervisor, before it spawns workers); its path."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, HEADER.size + slots * SLOT.size)  # zero-filled: every slot empty
        os.pwrite(fd, HEADER.pack(MAGIC, 1, slots), 0)
    finally:
        os.close(fd)
    return path


class SharedStore:
    """Budgets shared by every process that maps the same table file."""

    keeps_records = False

    def __init__(self, path: str, clock: Clock = time.time) -> None:
        self.path = path
        self._clock = clock
        self._thread_lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(self._fd, 0)
            magic, version, slots = HEADER.unpack_from(self._map, 0)
            if magic != MAGIC or version != 1 or len(self._map) < HEADER.size + slots * SLOT.size:
                raise ValueError(f"{path} is not a limits table")
        except BaseException:
            os.close(self._fd)
            raise
        self.slots: int = slots

    @classmethod
    def create(cls, path: str, slots: int = DEFAULT_SLOTS, clock: Clock = time.time) -> SharedStore:
        """Make a new, empty table and open it."""
        return cls(make_table(path, slots), clock)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, key: str, kind: LimitKind, now: float) -> int:
        """The offset of the key's slot, claiming one when it has none (under the lock)."""
        digest = digest_of(key, kind)
        table = self._map
        home = int.from_bytes(digest[:8], "little") % self.slots
        reusable = -1
        for step in range(min(MAX_PROBE, self.slots)):
            offset = HEADER.size + ((home + step) % self.slots) * SLOT.size
            found = table[offset : offset + 16]
            if found == digest:
                return offset
            if found == EMPTY:
                break
            if reusable < 0:
                used, updated, limit, stored_kind = VALUES.unpack_from(table, offset + 16)
                if used_at(LimitKind(stored_kind), int(limit), (used, updated), now) == 0.0:
                    reusable = offset
        else:
            if reusable < 0:
                raise StoreUnavailable("the shared limits table is full")
        if reusable >= 0:
            offset = reusable
        SLOT.pack_into(table, offset, digest, 0.0, 0.0, 0.0, kind.value)
        return offset

    def _find(self, digest: bytes) -> int:
        """The offset of the slot whose digest is `digest`, -1 when there is none (its budget is
        then full: never written, or its slot taken over once full). Claims nothing."""
        table = self._map
        home = int.from_bytes(digest[:8], "little") % self.slots
        for step in range(min(MAX_PROBE, self.slots)):
            offset = HEADER.size + ((home + step) % self.slots) * SLOT.size
            found = table[offset : offset + 16]
            if found == digest:
                return offset
            if found == EMPTY:
                break
        return -1

    def peek_now(self, demands: Sequence[Demand]) -> Decision:
        """The demands' budgets now, read under the lock; nothing is written (a full table
        is no failure here: a budget without a slot is full)."""
        now = self._clock()
        table = self._map
        with self._locked():
            states = []
            for demand in demands:
                offset = self._find(digest_of(demand.key, demand.kind))
                states.append(VALUES.unpack_from(table, offset + 16)[:2] if offset >= 0 else (0.0, 0.0))
        return peek(demands, states, now)

    def reserve_now(self, demands: Sequence[Demand]) -> Decision:
        now = self._clock()
        table = self._map
        with self._locked():
            offsets = [self._slot(d.key, d.kind, now) for d in demands]
            states = [VALUES.unpack_from(table, offset + 16)[:2] for offset in offsets]
            decision, new = decide(demands, states, now)
            for demand, offset, (used, updated) in zip(demands, offsets, new, strict=True):
                VALUES.pack_into(table, offset + 16, used, updated, float(demand.limit), demand.kind.value)
        return decision

    def settle_now(self, charges: Sequence[Charge]) -> None:
        now = self._clock()
        table = self._map
        with self._locked():
            for charge in charges:
                offset = self._slot(charge.key, charge.kind, now)
                state = VALUES.unpack_from(table, offset + 16)[:2]
                used, updated = settle_state(
                    charge.kind, charge.limit, state, charge.delta, now, charge.reserved_at
                )
                VALUES.pack_into(table, offset + 16, used, updated, float(charge.limit), charge.kind.value)

    async def reserve(self, demands: Sequence[Demand], record: str = "") -> Decision:
        return self.reserve_now(demands)

    async def settle(self, charges: Sequence[Charge], record: str = "") -> None:
        self.settle_now(charges)

    async def release(self, demands: Sequence[Demand], record: str) -> None:
        return None  # no records: a reservation here always got its answer

    async def peek(self, demands: Sequence[Demand]) -> Decision:
        return self.peek_now(demands)

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1
