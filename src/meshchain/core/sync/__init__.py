"""Headers-first chain sync (issue 7): locators, a bounded header tree, a block download
scheduler with stall detection, and the `Sync` component the node plugs in."""

from __future__ import annotations

from meshchain.core.sync.sync import SYNC_TIMER, Sync

__all__ = ["SYNC_TIMER", "Sync"]
