"""Reading what Customer Insights writes: one segment run as CSV parts plus model.json.

Layout (Customer Insights data-out export to Blob Storage):

    <Export>/model.json
    <Export>/<Table>/yyyy/MM/dd/HHmm/<Table>_1.csv ... <Table>_N.csv

model.json names the columns, in order; the CSV parts may have no header row (the CDM
default is ``columnHeaders: false``). A SOURCE may be one file, one run folder, or a
table folder (its newest run is taken). Reading the parts is shared/segments/blocks.py's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from shared.errors import InputError
from shared.storage.files import FileStore, iter_ancestors

CSV_SUFFIXES = (".csv", ".csv.gz")
MODEL_FILE = "model.json"
# A run folder: .../yyyy/MM/dd/HHmm/
_RUN_FOLDER = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{4})$")
_PART_NUMBER = re.compile(r"_(\d+)\.csv(?:\.gz)?$", re.IGNORECASE)
# How far above a run folder model.json may sit (run folder, 4 date levels, table, export).
_MODEL_SEARCH_DEPTH = 7
# model.json names entities, columns and partitions: a few hundred KB for the largest
# Customer Insights exports. Past this it is not a model.json, and is not parsed.
MODEL_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Part:
    """One CSV file of a segment run."""

    name: str
    header: bool | None  # None: decide by comparing the first row with the columns


@dataclass(frozen=True)
class Segment:
    """A located segment run: its parts, in order, and what model.json says of them."""

    store: FileStore
    parts: tuple[Part, ...]
    columns: tuple[str, ...] | None  # from model.json; None means the files carry a header
    entity: str | None
    delimiter: str = ","
    encoding: str | None = None
    model: str | None = None  # where model.json was found

    def describe(self) -> str:
        if len(self.parts) == 1:
            return self.store.describe(self.parts[0].name)
        folder = self.parts[0].name.rpartition("/")[0] if self.parts else ""
        return f"{self.store.describe(folder)} ({len(self.parts)} parts)"


def _is_csv(name: str) -> bool:
    return name.lower().endswith(CSV_SUFFIXES)


def _part_sort_key(name: str) -> tuple[int, str]:
    match = _PART_NUMBER.search(name)
    return (int(match.group(1)) if match else 0, name)


def _newest_run_folder(files: list[str]) -> str | None:
    runs: dict[tuple[str, ...], str] = {}
    for name in files:
        folder = name.rpartition("/")[0]
        match = _RUN_FOLDER.search(folder)
        if match and _is_csv(name):
            runs[match.groups()] = folder
    return runs[max(runs)] if runs else None


def _table_name(run_folder: str) -> str | None:
    """The table (segment) folder above yyyy/MM/dd/HHmm, if the layout is Customer Insights'."""
    if not _RUN_FOLDER.search(run_folder):
        return None
    parts = run_folder.split("/")
    return parts[-5] if len(parts) >= 5 else None


def locate(store: FileStore, name: str, *, encoding: str | None = None) -> Segment:
    """Find the parts of the segment run at name, and the model.json that describes them."""
    if store.is_file(name):
        if not _is_csv(name):
            raise InputError(f"{store.describe(name)} is not a .csv or .csv.gz file")
        part_names = [name]
        folder = name.rpartition("/")[0]
    else:
        files = store.list_files(name)
        direct = [f for f in files if f.rpartition("/")[0] == name.rstrip("/") and _is_csv(f)]
        if direct:
            part_names, folder = direct, name.rstrip("/")
        else:
            newest = _newest_run_folder(files)
            if newest is None:
                raise InputError(f"{store.describe(name)} holds no .csv or .csv.gz files")
            folder = newest
            part_names = [f for f in files if f.rpartition("/")[0] == newest and _is_csv(f)]
    part_names.sort(key=_part_sort_key)
    return _with_model(store, folder, part_names, encoding)


def _find_model(store: FileStore, folder: str) -> str | None:
    for depth, ancestor in enumerate(iter_ancestors(f"{folder}/x" if folder else "x")):
        if depth >= _MODEL_SEARCH_DEPTH:
            break
        candidate = f"{ancestor}/{MODEL_FILE}" if ancestor else MODEL_FILE
        if store.is_file(candidate):
            return candidate
    return None


def _with_model(
    store: FileStore, folder: str, part_names: list[str], encoding: str | None
) -> Segment:
    model_name = _find_model(store, folder)
    if model_name is None:
        parts = tuple(Part(n, header=True) for n in part_names)
        return Segment(store, parts, columns=None, entity=None, encoding=encoding)
    try:
        model = orjson.loads(_read_model(store, model_name))
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{store.describe(model_name)} is not valid JSON: {exc}") from None
    entity = _pick_entity(model, _table_name(folder), part_names, store.describe(model_name))
    columns = tuple(str(a.get("name", "")) for a in entity.get("attributes", []))
    if not columns or not all(columns):
        raise InputError(
            f"{store.describe(model_name)}: entity {entity.get('name')!r} "
            "lists no column names (attributes)"
        )
    settings = _format_settings(entity)
    header = settings.get("columnHeaders")
    parts = tuple(Part(n, header=header if isinstance(header, bool) else None) for n in part_names)
    delimiter = settings.get("delimiter") or ","
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise InputError(f"{store.describe(model_name)}: unsupported delimiter {delimiter!r}")
    enc = encoding or (
        settings.get("encoding") if isinstance(settings.get("encoding"), str) else None
    )
    return Segment(store, parts, columns, str(entity.get("name")), delimiter, enc, model_name)


def _read_model(store: FileStore, name: str) -> bytes:
    with store.open(name) as stream:
        raw = stream.read(MODEL_MAX_BYTES + 1)
    if len(raw) > MODEL_MAX_BYTES:
        raise InputError(
            f"{store.describe(name)} is larger than {MODEL_MAX_BYTES >> 20} MB: "
            "not a model.json that Customer Insights writes"
        )
    return raw


def _pick_entity(
    model: Any, table: str | None, part_names: list[str], where: str
) -> dict[str, Any]:
    entities = (
        [e for e in (model.get("entities") or []) if isinstance(e, dict)]
        if isinstance(model, dict)
        else []
    )
    if not entities:
        raise InputError(f"{where} lists no entities")
    if table:
        for entity in entities:
            if str(entity.get("name", "")).lower() == table.lower():
                return entity
    files = {n.rpartition("/")[2].lower() for n in part_names}
    for entity in entities:
        for partition in entity.get("partitions") or []:
            location = str(partition.get("location", "")).lower()
            if location.rpartition("/")[2] in files:
                return entity
    if len(entities) == 1:
        return entities[0]
    names = ", ".join(str(e.get("name")) for e in entities)
    raise InputError(f"{where} has no entity for {table or 'these files'} (it has: {names})")


def _format_settings(entity: dict[str, Any]) -> dict[str, Any]:
    for partition in entity.get("partitions") or []:
        settings = partition.get("fileFormatSettings")
        if isinstance(settings, dict):
            return settings
    return {}


# --- names in the layout: where a blob sits, read from its name alone ---------------------

_PART = re.compile(
    r"^(?P<root>(?:[^/]+/)*?)(?P<export>[^/]+)/(?P<table>[^/]+)/"
    r"(?P<stamp>\d{4}/\d{2}/\d{2}/\d{4})/(?P<file>[^/]+)$"
)
_MODEL = re.compile(r"^(?P<root>(?:[^/]+/)*?)(?P<export>[^/]+)/(?P<file>[^/]+)$")
_RUN_FOLDER = re.compile(
    r"^(?P<root>(?:[^/]+/)*?)(?P<export>[^/]+)/(?P<table>[^/]+)/(?P<stamp>\d{4}/\d{2}/\d{2}/\d{4})$"
)


@dataclass(frozen=True)
class InboxPath:
    """Where a blob sits in the Customer Insights layout."""

    root: str  # the folders above the export folder, '' or ending in '/'
    export: str
    table: str | None = None  # None for model.json
    stamp: str | None = None  # 'yyyy/MM/dd/HHmm' for a part

    @property
    def export_folder(self) -> str:
        return f"{self.root}{self.export}"

    @property
    def run_folder(self) -> str | None:
        if self.table is None or self.stamp is None:
            return None
        return f"{self.root}{self.export}/{self.table}/{self.stamp}"

    @property
    def is_model(self) -> bool:
        return self.table is None


def is_part(name: str) -> bool:
    return name.lower().endswith(CSV_SUFFIXES)


def parse_blob_name(name: str) -> InboxPath | None:
    """A part (``.../<Table>/yyyy/MM/dd/HHmm/<file>.csv``) or an export's model.json;
    None for anything else (the trigger ignores it)."""
    match = _PART.match(name)
    if match and is_part(name):
        return InboxPath(match["root"], match["export"], match["table"], match["stamp"])
    match = _MODEL.match(name)
    if match and match["file"] == MODEL_FILE:
        return InboxPath(match["root"], match["export"])
    return None


def parse_run_folder(path: str) -> InboxPath | None:
    """A run folder's path (``.../<Export>/<Table>/yyyy/MM/dd/HHmm``, no slashes around
    it) as export and table, read from the name alone: a run asked for by path is
    checked against its export's segments before the inbox is listed; None when the
    path is not a run folder's."""
    match = _RUN_FOLDER.match(path)
    if match is None:
        return None
    return InboxPath(match["root"], match["export"], match["table"], match["stamp"])
