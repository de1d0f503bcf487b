"""Reading what Customer Insights writes: one segment run as CSV parts plus model.json.

Layout (Customer Insights data-out export to Blob Storage):

    <Export>/model.json
    <Export>/<Table>/yyyy/MM/dd/HHmm/<Table>_1.csv ... <Table>_N.csv

model.json names the columns, in order; the CSV parts may have no header row (the CDM
default is ``columnHeaders: false``). A SOURCE may be one file, one run folder, or a
table folder (its newest run is taken). Rows are streamed: memory does not grow with
the file size.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from shared.errors import InputError
from shared.files import FileStore, iter_ancestors

CSV_SUFFIXES = (".csv", ".csv.gz")
MODEL_FILE = "model.json"
# A run folder: .../yyyy/MM/dd/HHmm/
_RUN_FOLDER = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{4})$")
_PART_NUMBER = re.compile(r"_(\d+)\.csv(?:\.gz)?$", re.IGNORECASE)
# How far above a run folder model.json may sit (run folder, 4 date levels, table, export).
_MODEL_SEARCH_DEPTH = 7
# A single field may be this large; past it the file is malformed (often an unbalanced
# quote swallowing the rest of the file), and reading stops with an error instead of
# holding the rest of the file in one string.
FIELD_SIZE_LIMIT = 16 * 1024 * 1024
csv.field_size_limit(FIELD_SIZE_LIMIT)


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
        model = orjson.loads(store.read_bytes(model_name))
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


# -- reading ------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _byte_stream(raw: io.BufferedReader) -> tuple[io.BufferedReader | gzip.GzipFile, bytes]:
    """The file's bytes, gunzipped when they are gzip (whatever the file is called)."""
    if raw.peek(2)[:2] == b"\x1f\x8b":
        unzipped = gzip.GzipFile(fileobj=raw)
        return unzipped, unzipped.peek(4)[:4]
    return raw, raw.peek(4)[:4]


def _encoding_for(head: bytes, encoding: str | None) -> str:
    if encoding is None:
        return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8-sig")
    if encoding.replace("_", "-").lower() in {"utf-8", "utf8"}:
        return "utf-8-sig"  # a BOM is never part of the first column's name
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f'unknown encoding "{encoding}" in the export definition') from None


def _text_stream(raw: io.BufferedReader, encoding: str | None) -> io.TextIOWrapper:
    stream, head = _byte_stream(raw)
    chosen = _encoding_for(head, encoding)
    return io.TextIOWrapper(stream, encoding=chosen, errors="strict", newline="")


def decode_error_line(raw: io.BufferedReader, encoding: str | None) -> int | None:
    """The line of the first byte that does not decode.

    The text layer decodes ahead of the CSV reader in large blocks, so when decoding
    fails the reader's line is not where the bad byte is. This slow path, run only
    for the error message, reads the file again and counts.
    """
    stream, head = _byte_stream(raw)
    decoder = codecs.getincrementaldecoder(_encoding_for(head, encoding))("strict")
    line = 1
    with stream:
        while block := stream.read(1 << 20):
            try:
                text = decoder.decode(block)
            except UnicodeDecodeError as exc:
                return line + block[: max(exc.start, 0)].count(b"\n")
            line += text.count("\n")
    return None


class OpenPart:
    """One part being read: ``records`` yields each CSV record's values.

    Used as a context manager, it closes the file and turns decoding and CSV errors
    into one-line InputErrors that say which file and line. ``line`` is the physical
    line the reader has reached (records may span lines inside quoted values).
    """

    def __init__(
        self,
        part: Part,
        where: str,
        text: io.TextIOWrapper,
        *,
        delimiter: str,
        encoding: str | None,
        reopen: Callable[[], io.BufferedReader],
    ) -> None:
        self.part = part
        self._reopen = reopen
        self.where = where
        self._text = text
        self._encoding = encoding
        self._reader = csv.reader(text, delimiter=delimiter, strict=False)
        self.records: Iterator[list[str]] = self._reader

    @property
    def line(self) -> int:
        return self._reader.line_num

    def first(self) -> list[str] | None:
        with self._errors():
            return next(self._reader, None)

    def push_back(self, record: list[str]) -> None:
        self.records = itertools.chain((record,), self._reader)

    def __enter__(self) -> OpenPart:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        self._text.close()
        if exc is not None:
            self._translate(exc)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (UnicodeDecodeError, csv.Error) as exc:
            self._text.close()
            self._translate(exc)

    def _translate(self, exc: BaseException) -> None:
        line = self.line + 1
        if isinstance(exc, UnicodeDecodeError):
            line = decode_error_line(self._reopen(), self._encoding) or line
            raise InputError(
                f"{self.where}: cannot decode line {line} as {self._encoding or 'UTF-8'} "
                f'({exc.reason}); set "encoding" in the export definition (for example "cp1252")'
            ) from None
        if isinstance(exc, csv.Error):
            raise InputError(f"{self.where}: line {line}: {exc} (an unbalanced quote?)") from None


class SegmentReader:
    """Opens the parts of a segment run in order, each positioned at its first data row.

    ``open()`` reads just far enough to know the columns (model.json, or the first
    part's header row), so a mapping can be checked before any row is processed. The
    caller iterates each part's records itself: this is the hot loop of prepare, and
    a generator layer per row would cost a third of its time.
    """

    def __init__(self, segment: Segment) -> None:
        self.segment = segment

    def open(self) -> tuple[tuple[str, ...], Iterator[OpenPart]]:
        parts = iter(self.segment.parts)
        columns = self.segment.columns
        ready: list[OpenPart] = []  # parts already opened while looking for the header
        if columns is None:
            # No model.json: every part starts with a header row; the first one found
            # names the columns (empty parts before it are still reported, with 0 rows).
            columns = ()
            for part in parts:
                opened = self._open(part)
                ready.append(opened)
                first = opened.first()
                if first is not None:
                    columns = tuple(v.strip() for v in first)
                    break
        return columns, self._parts(columns, parts, ready)

    def _parts(
        self, columns: tuple[str, ...], parts: Iterator[Part], ready: list[OpenPart]
    ) -> Iterator[OpenPart]:
        yield from ready
        for part in parts:
            opened = self._open(part)
            first = opened.first()
            if first is not None and not self._is_header(part, first, columns):
                opened.push_back(first)
            yield opened

    def _open(self, part: Part) -> OpenPart:
        stream = _text_stream(self.segment.store.open(part.name), self.segment.encoding)
        where = self.segment.store.describe(part.name)
        return OpenPart(
            part,
            where,
            stream,
            delimiter=self.segment.delimiter,
            encoding=self.segment.encoding,
            reopen=lambda: self.segment.store.open(part.name),
        )

    def _is_header(self, part: Part, first: list[str], columns: tuple[str, ...]) -> bool:
        where = self.segment.store.describe(part.name)
        if self.segment.columns is None:  # no model.json: each part has its own header row
            if tuple(v.strip() for v in first) != columns:
                raise InputError(f"{where}: its header row differs from the first part's")
            return True
        if len(first) != len(columns):
            raise InputError(
                f"{where} has {len(first)} columns but {self.segment.model} lists "
                f"{len(columns)} for {self.segment.entity}: the file and model.json do not match"
            )
        if part.header is not None:
            return part.header
        return [v.strip().lower() for v in first] == [c.lower() for c in columns]
