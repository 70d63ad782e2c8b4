"""The proxy process freezes its startup heap (see `freeze_startup_heap`)."""

from __future__ import annotations

import gc

from routeway_proxy.process import freeze_startup_heap


def test_freeze_startup_heap_moves_live_objects_out_of_collections() -> None:
    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # modules, the app: everything alive at startup
    finally:
        gc.unfreeze()
