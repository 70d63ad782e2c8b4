"""The shared table's own rules (`limits/shared.py`): slots, collisions, reuse, a full table.

Matrix: many keys in a small table each keep their own budget (probing, full-digest match);
a second process's view (another open of the same file) sees the same budgets; a slot whose
budget is full again is taken over when the table has no free slot; a table of live budgets
refuses with `StoreUnavailable`; a file that is not a table is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from limits_helpers import FakeClock
from routeway_proxy.limits.budget import Demand, LimitKind
from routeway_proxy.limits.local import StoreUnavailable
from routeway_proxy.limits.shared import SharedStore

RPM = LimitKind.REQUESTS_PER_MINUTE


def test_many_keys_keep_their_own_budgets(tmp_path: Path, clock: FakeClock) -> None:
    store = SharedStore.create(str(tmp_path / "t"), slots=256, clock=clock)
    keys = [f"client:ns/team-{i}" for i in range(150)]
    assert all(store.reserve_now([Demand(k, RPM, 1, 1)]).admitted for k in keys)
    assert not any(store.reserve_now([Demand(k, RPM, 1, 1)]).admitted for k in keys)
    other = SharedStore(store.path, clock=clock)  # another process opens the same file
    assert not other.reserve_now([Demand(keys[7], RPM, 1, 1)]).admitted
    assert other.reserve_now([Demand("client:ns/new", RPM, 1, 1)]).admitted
    other.close_now()
    store.close_now()


def test_full_table_reuses_refilled_slots_or_refuses(tmp_path: Path, clock: FakeClock) -> None:
    store = SharedStore.create(str(tmp_path / "t"), slots=8, clock=clock)
    for i in range(8):
        assert store.reserve_now([Demand(f"k{i}", RPM, 60, 60)]).admitted
    with pytest.raises(StoreUnavailable):
        store.reserve_now([Demand("k8", RPM, 60, 1)])
    clock.advance(60.0)  # every budget is full again: their slots are as good as free
    assert store.reserve_now([Demand("k8", RPM, 60, 60)]).admitted
    assert not store.reserve_now([Demand("k8", RPM, 60, 1)]).admitted
    assert store.reserve_now([Demand("k0", RPM, 60, 60)]).admitted  # k0 lost nothing it had
    store.close_now()


def test_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"x" * 128)
    with pytest.raises(ValueError, match="not a limits table"):
        SharedStore(str(path))
