"""The contact_exports activity and the CSV file it produces.

The file is addressed by the activity's id (the spec: "retrieve ... a CSV file
containing exported contacts by providing the activity_id of a completed CSV export
activity"). Which columns the real file has is only partly documented; the sandbox
writes these, in this order:

``email_address, first_name, last_name, job_title, company_name, phone_number,
email_status, email_lists, created_at, updated_at`` and then every custom field
(``cf:<name>``) found among the exported contacts. ``contact_id`` — whether the real
export can include it is unconfirmed — is written only when ``fields`` asks for it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence

from sandbox.activities import Activity, Work
from sandbox.store import Store
from sandbox.wire import iso

DEFAULT_FIELDS = (
    "email_address", "first_name", "last_name", "job_title", "company_name",
    "phone_number", "email_status", "email_lists", "created_at", "updated_at",
)  # fmt: skip
KNOWN_FIELDS = frozenset(DEFAULT_FIELDS) | {
    "contact_id",
    "birthday_month",
    "birthday_day",
    "anniversary",
}
_ROWS_PER_CHUNK = 5000


class ExportWork(Work):
    """Snapshots which contacts to export; collects custom-field columns as it goes."""

    def __init__(self, store: Store, indices: Sequence[int], fields: Sequence[str] | None) -> None:
        self.store = store
        self.indices = indices
        self.fields = list(fields) if fields else list(DEFAULT_FIELDS)
        self.collect_custom = not fields
        self.custom: dict[str, None] = {}
        self.total = len(indices)

    def apply(self, activity: Activity, start: int, end: int) -> None:
        if not self.collect_custom:
            return
        for index in self.indices[start:end]:
            raw = self.store.attrs[index]
            if b'"cf:' in raw:
                for name in self.store.properties(index):
                    if name.startswith("cf:"):
                        self.custom.setdefault(name)

    def finish(self, activity: Activity) -> None:
        self.fields.extend(self.custom)
        activity.results_href = f"/v3/contact_exports/{activity.activity_id}"

    def csv_chunks(self) -> Iterator[bytes]:
        """The CSV file in chunks of rows, header first."""
        store = self.store
        names = {lst.list_id: lst.name for lst in store.lists.values()}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.fields)
        for number, index in enumerate(self.indices, start=1):
            props = store.properties(index)
            row: list[str] = []
            for name in self.fields:
                if name == "email_address":
                    key = store.keys[index]
                    row.append(key if "@" in key else "")
                elif name == "contact_id":
                    row.append(store.contact_id(index))
                elif name == "phone_number":
                    row.append(str(props.get("phone", "")))
                elif name == "email_status":
                    row.append("unsubscribed" if store.is_unsubscribed(index) else "implicit")
                elif name == "email_lists":
                    row.append(", ".join(names[i] for i in store.lists_of(index) if i in names))
                elif name == "created_at":
                    row.append(iso(store.created[index]))
                elif name == "updated_at":
                    row.append(iso(store.updated[index]))
                else:
                    row.append(str(props.get(name, "")))
            writer.writerow(row)
            if number % _ROWS_PER_CHUNK == 0:
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode()
