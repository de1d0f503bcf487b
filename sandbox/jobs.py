"""What import and list-membership activities do to the account, slice by slice."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sandbox.activities import Activity, Work
from sandbox.imports import ImportBatch
from sandbox.store import Store


class ImportWork(Work):
    """Applies an import's records; reports the ActivityImport counters."""

    def __init__(self, store: Store, batch: ImportBatch, clock: Callable[[], float]) -> None:
        self.store = store
        self.records = batch.records
        self.list_ids = batch.list_ids
        self.clock = clock
        self.total = len(batch.records)

    @staticmethod
    def counters(batch: ImportBatch) -> dict[str, int]:
        return {
            "items_total_count": batch.items_total,
            "person_count": 0,
            "error_count": batch.error_count,
            "correctable_count": batch.correctable_count,
            "cannot_add_to_list_count": 0,
        }

    def apply(self, activity: Activity, start: int, end: int) -> None:
        result = self.store.upsert(self.records[start:end], self.list_ids, self.clock())
        activity.counters["person_count"] += end - start
        activity.counters["cannot_add_to_list_count"] += result.cannot_add_to_list

    def finish(self, activity: Activity) -> None:
        self.records = []  # the import is applied; its payload is no longer needed


class MembershipWork(Work):
    """Adds contacts to, or removes them from, lists (ActivityListsMembership)."""

    def __init__(
        self, store: Store, indices: Sequence[int], list_ids: list[str], add: bool
    ) -> None:
        self.store = store
        self.indices = indices
        self.list_ids = list_ids
        self.add = add
        self.total = len(indices)

    def apply(self, activity: Activity, start: int, end: int) -> None:
        chunk = self.indices[start:end]
        if self.add:
            self.store.add_members(chunk, self.list_ids)
        else:
            self.store.remove_members(chunk, self.list_ids)

    def finish(self, activity: Activity) -> None:
        self.indices = []
