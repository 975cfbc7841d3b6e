"""The managed timestamps: ``created_at`` when a row is inserted, ``updated_at`` on every write.

Every model has both; a reflected table may have either, or neither.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from .base import Behaviour

__all__ = ["Timestamps"]


class Timestamps(Behaviour):
    name = "timestamps"
    refreshed = ("updated_at",)  # an upsert that meets a row dates the change; created_at stays

    def __init__(self, columns: tuple[str, ...]):
        self.columns = columns  # those of created_at, updated_at the table has
        self.touches = "updated_at" in columns

    def insert_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any]:
        return dict.fromkeys(self.columns, now)

    def touch_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any]:
        return {"updated_at": now} if self.touches else {}
