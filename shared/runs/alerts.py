"""The log alert rules of the deployment, as data: what each one selects in the log.

Each rule's filter is written here once, as terms (column, operator, value). From
them come two things that must agree:

- its Kusto query (:func:`kql`), which infra/core/alerts.bicep deploys as a scheduled
  query rule on Application Insights: ``python -m shared.runs.alerts`` writes every
  query into infra/core/alert-queries.json, which the template loads, and a test
  fails while the file differs from what this module says;
- its evaluation in Python (:func:`select`) over log rows, which the tests run over the
  records real runs write, so each rule is shown to fire on the records it should and
  on no other. Nothing here can run Kusto: the two translations are kept small and
  side by side so that each operator means the same in both (``==``, ``in`` and
  ``matches regex`` are case-sensitive in Kusto as in Python; a null compares false).

Rows are shaped like Application Insights' classic tables, which the rules query:
``traces`` (``timestamp``, ``message``: the Functions Python worker sends a record's
formatted message only, hence the outcome record's fields inside its message,
shared/runs/outcome.py) and ``requests`` (``timestamp``, ``name``, ``success``: one
row per function invocation, written by the Functions host).

Column names in the queries start with a capital letter (``RunId``, ``Outcome``), so
no one of them is a Kusto keyword. The values the deployment chooses (the reject
thresholds, how long a confirmation may wait) are Kusto ``let`` names, bound by the
template in front of every query (:data:`PARAMETERS`).
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import orjson

from shared.runs.outcome import RUN_FINISHED, fields_of

Op = Literal["==", "!=", "in", "!in", ">", "<", "matches regex"]


@dataclass(frozen=True)
class Param:
    """A value the deployment sets: a Kusto ``let`` name (see :data:`PARAMETERS`)."""

    name: str


@dataclass(frozen=True)
class Ago:
    """Now, less a timespan the deployment sets (Kusto ``ago(name)``)."""

    param: str


@dataclass(frozen=True)
class Column:
    """Another column of the same row."""

    name: str


Value = str | int | float | bool | tuple[str, ...] | Param | Ago | Column


@dataclass(frozen=True)
class Term:
    column: str
    op: Op
    value: Value


Clause = tuple[Term, ...]
"""Terms that must all hold."""


class Source(StrEnum):
    """Which rows a rule reads, and the columns they give it."""

    RUN_FINISHED = "run_finished"
    """Each run's outcome record, its fields as typed columns (shared/runs/outcome.py)."""
    RECONNECT = "reconnect"
    """Log lines that say a connection must be reconnected, with the connection's name."""
    REQUESTS = "requests"
    """Function invocations, as the Functions host records them."""


@dataclass(frozen=True)
class AlertRule:
    key: str
    """Its name in alert-queries.json and in infra/core/alerts.bicep."""
    source: Source
    where: tuple[Clause, ...]
    """Clauses of which any one selects a row."""
    dimensions: tuple[str, ...]
    """Columns the alert is split by: one alert per value (an export, a run)."""
    show: tuple[str, ...] = ()
    """More columns the query returns, for whoever opens its results."""
    latest_per: str | None = None
    """Keep only each value's newest row before ``where`` (a run's last outcome)."""


# --- the columns of each source -------------------------------------------------------

RECORD_COLUMNS: dict[str, str] = {
    "event": "string",
    "run_id": "string",
    "export": "string",
    "connection": "string",
    "trigger": "string",
    "outcome": "string",
    "duration_seconds": "real",
    "rows_read": "long",
    "contacts": "long",
    "delivered": "long",
    "not_delivered": "long",
    "unconfirmed": "long",
    "unchanged": "long",
    "rejected": "long",
    "duplicates": "long",
    "removed": "long",
    "requests": "long",
    "error": "string",
}
"""The outcome record's fields and their Kusto types (a test checks them against
``run_finished``): each becomes a column named in CamelCase (``run_id`` → ``RunId``)."""


def column_name(field: str) -> str:
    return "".join(part.capitalize() for part in field.split("_"))


PARAMETERS: dict[str, str] = {
    "RejectPercentDefault": "real: the share of a segment's rows rejected, in percent, "
    "above which a run alerts",
    "RejectPercentByExport": "dynamic: a per-export override of it, {export: percent}",
    "ConfirmationWait": "timespan: how long a run may wait for its removals to be "
    "confirmed before it alerts",
}
"""The ``let`` names infra/core/alerts.bicep binds in front of every query."""

RECONNECT_LINES = (
    r"^connection '[^']+' needs to be reconnected: ",
    r"^connection '[^']+': could not record that it needs reconnecting: ",
)
"""What shared/constant_contact/tokens.py logs when Constant Contact refuses a
connection's refresh token (and when it could not even record that)."""
_RECONNECT_PREFIX = "connection '"
_CONNECTION_NAME = r"^connection '([^']+)'"


@dataclass(frozen=True)
class Derived:
    """A column computed from others: its Kusto expression and the same in Python."""

    name: str
    kql: str
    python: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
    """``(row, parameters) -> value``."""


def _reject_percent(row: Mapping[str, Any], params: Mapping[str, Any]) -> float | None:
    del params
    rows, rejected = row.get("RowsRead"), row.get("Rejected")
    if rows is None or rows <= 0:
        return 0.0  # iff() takes a null condition as false
    return None if rejected is None else 100.0 * rejected / rows


def _reject_limit(row: Mapping[str, Any], params: Mapping[str, Any]) -> float:
    override = dict(params["RejectPercentByExport"]).get(row.get("Export"))
    return float(override if override is not None else params["RejectPercentDefault"])


def _connection(row: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    del params
    found = re.search(_CONNECTION_NAME, str(row.get("message", "")))
    return found.group(1) if found else ""


DERIVED: dict[Source, tuple[Derived, ...]] = {
    Source.RUN_FINISHED: (
        Derived(
            "RejectPercent",
            "iff(RowsRead > 0, 100.0 * Rejected / RowsRead, 0.0)",
            _reject_percent,
        ),
        Derived(
            "RejectLimit",
            "coalesce(toreal(RejectPercentByExport[Export]), toreal(RejectPercentDefault))",
            _reject_limit,
        ),
    ),
    Source.RECONNECT: (
        Derived("Connection", f'extract(@"{_CONNECTION_NAME}", 1, message)', _connection),
    ),
    Source.REQUESTS: (Derived("FunctionName", "name", lambda row, _: row.get("name")),),
}


# --- the rules --------------------------------------------------------------------------

RULES: tuple[AlertRule, ...] = (
    AlertRule(
        "runFailed",
        Source.RUN_FINISHED,
        where=(
            (Term("Outcome", "in", ("failed", "stopped", "completed_with_errors")),),
            (
                Term("NotDelivered", ">", 0),
                Term("Outcome", "!in", ("quota_exhausted", "needs_confirmation")),
            ),
        ),
        dimensions=("Export",),
        show=("RunId", "Outcome", "Contacts", "Delivered", "NotDelivered", "Error"),
    ),
    AlertRule(
        "rejectsAboveShare",
        Source.RUN_FINISHED,
        where=((Term("RejectPercent", ">", Column("RejectLimit")),),),
        dimensions=("Export",),
        show=("RunId", "Outcome", "RowsRead", "Rejected", "RejectPercent", "RejectLimit"),
    ),
    AlertRule(
        "connectionNeedsReconnect",
        Source.RECONNECT,
        where=tuple((Term("message", "matches regex", line),) for line in RECONNECT_LINES),
        dimensions=("Connection",),
        show=("message",),
    ),
    AlertRule(
        "quotaExhausted",
        Source.RUN_FINISHED,
        where=((Term("Outcome", "==", "quota_exhausted"),),),
        dimensions=("Export",),
        show=("RunId", "Connection", "NotDelivered", "Unconfirmed"),
    ),
    AlertRule(
        "confirmationWaiting",
        Source.RUN_FINISHED,
        where=(
            (
                Term("Outcome", "==", "needs_confirmation"),
                Term("timestamp", "<", Ago("ConfirmationWait")),
            ),
        ),
        dimensions=("RunId",),
        show=("Export", "Outcome"),
        latest_per="RunId",
    ),
    AlertRule(
        "functionErrors",
        Source.REQUESTS,
        where=((Term("success", "==", False),),),
        dimensions=("FunctionName",),
        show=("resultCode", "operation_Id"),
    ),
)
"""Every log alert rule. Dead-lettered Event Grid deliveries are a metric alert in
infra/core/alerts.bicep (the system topic's ``DeadLetteredCount``), not a log query."""


def rule(key: str) -> AlertRule:
    return next(r for r in RULES if r.key == key)


# --- Kusto ------------------------------------------------------------------------------


def _kql_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kql_value(value: Value) -> str:
    if isinstance(value, Param | Column):
        return value.name
    if isinstance(value, Ago):
        return f"ago({value.param})"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ", ".join(_kql_string(v) for v in value) + ")"
    return repr(value) if isinstance(value, int | float) else _kql_string(value)


def _kql_term(term: Term) -> str:
    if term.op == "matches regex":
        if not isinstance(term.value, str) or '"' in term.value:
            raise ValueError(f"{term}: a regex is a string without double quotes")
        return f'{term.column} matches regex @"{term.value}"'
    return f"{term.column} {term.op} {_kql_value(term.value)}"


def _kql_where(clauses: tuple[Clause, ...]) -> str:
    def clause(terms: Clause) -> str:
        text = " and ".join(_kql_term(t) for t in terms)
        return f"({text})" if len(terms) > 1 and len(clauses) > 1 else text

    return " or ".join(clause(c) for c in clauses)


def _kql_source(source: Source) -> list[str]:
    if source is Source.RUN_FINISHED:
        head = f"{RUN_FINISHED} {{"
        typed = ", ".join(
            f'{column_name(f)} = to{kind}(Record["{f}"])' for f, kind in RECORD_COLUMNS.items()
        )
        return [
            "traces",
            f"| where message startswith_cs {_kql_string(head)}",
            f"| extend Record = parse_json(substring(message, {len(head) - 1}))",
            f"| extend {typed}",
        ]
    if source is Source.RECONNECT:
        return ["traces", f"| where message startswith_cs {_kql_string(_RECONNECT_PREFIX)}"]
    return ["requests"]


def _derived(alert: AlertRule) -> tuple[Derived, ...]:
    """The computed columns the rule uses."""
    used = {alert.latest_per, *alert.dimensions, *alert.show}
    for clause in alert.where:
        for term in clause:
            used.add(term.column)
            if isinstance(term.value, Column):
                used.add(term.value.name)
    return tuple(d for d in DERIVED[alert.source] if d.name in used)


def kql(alert: AlertRule) -> str:
    """The rule's query, without the ``let`` lines the template puts in front."""
    lines = _kql_source(alert.source)
    lines += [f"| extend {d.name} = {d.kql}" for d in _derived(alert)]
    if alert.latest_per:
        lines.append(f"| summarize arg_max(timestamp, *) by {alert.latest_per}")
    lines.append(f"| where {_kql_where(alert.where)}")
    shown = dict.fromkeys(("timestamp", *alert.dimensions, *alert.show))
    lines.append("| project " + ", ".join(shown))
    return "\n".join(lines)


def queries() -> dict[str, Any]:
    """alert-queries.json: each rule's query and the dimensions it splits by."""
    document: dict[str, Any] = {
        "$comment": "Written by `python -m shared.runs.alerts > infra/core/alert-queries.json` "
        "from shared/runs/alerts.py; tests/test_alert_rules.py checks it is up to date.",
    }
    for alert in RULES:
        document[alert.key] = {
            "query": kql(alert),
            "dimensions": [
                {"name": d, "operator": "Include", "values": ["*"]} for d in alert.dimensions
            ],
        }
    return document


def queries_json() -> str:
    return orjson.dumps(queries(), option=orjson.OPT_INDENT_2).decode() + "\n"


# --- the same, in Python ----------------------------------------------------------------


def _typed(value: Any, kind: str) -> Any:
    """As Kusto's to<kind>() gives it: a missing string is empty, a missing number null."""
    if kind == "string":
        return "" if value is None else str(value)
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value) if kind == "real" else int(value)
    except (TypeError, ValueError):
        return None


def _rows(source: Source, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for row in rows:
        if source is Source.REQUESTS:
            if "success" in row:
                found.append(dict(row))
            continue
        message = row.get("message")
        if not isinstance(message, str):
            continue
        if source is Source.RECONNECT:
            if message.startswith(_RECONNECT_PREFIX):
                found.append(dict(row))
            continue
        if not message.startswith(f"{RUN_FINISHED} {{"):
            continue
        fields = fields_of(message) or {}
        typed = {column_name(f): _typed(fields.get(f), k) for f, k in RECORD_COLUMNS.items()}
        found.append({**row, **typed})
    return found


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "in": lambda left, right: left in right,
    "!in": lambda left, right: left not in right,
    ">": operator.gt,
    "<": operator.lt,
    "matches regex": lambda left, right: re.search(str(right), str(left)) is not None,
}


def _holds(term: Term, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> bool:
    value = term.value
    right: Any
    if isinstance(value, Param):
        right = params[value.name]
    elif isinstance(value, Ago):
        right = now - params[value.param]
    elif isinstance(value, Column):
        right = row.get(value.name)
    else:
        right = value
    left = row.get(term.column)
    if left is None or right is None:
        return False  # Kusto: a comparison with null is null, and where drops the row
    return bool(_COMPARE[term.op](left, right))


def select(
    alert: AlertRule,
    rows: Iterable[Mapping[str, Any]],
    *,
    params: Mapping[str, Any],
    now: datetime,
) -> list[dict[str, Any]]:
    """The rows the rule's query returns over ``rows`` (traces or requests rows), with
    the columns it projects; ``params`` binds :data:`PARAMETERS`."""
    found = _rows(alert.source, rows)
    for row in found:
        for derived in _derived(alert):
            row[derived.name] = derived.python(row, params)
    if alert.latest_per:
        latest: dict[Any, dict[str, Any]] = {}
        for row in found:
            key = row.get(alert.latest_per)
            if key not in latest or row["timestamp"] > latest[key]["timestamp"]:
                latest[key] = row
        found = list(latest.values())
    shown = dict.fromkeys(("timestamp", *alert.dimensions, *alert.show))
    return [
        {name: row.get(name) for name in shown}
        for row in found
        if any(all(_holds(t, row, params, now) for t in clause) for clause in alert.where)
    ]


DEFAULT_PARAMETERS: dict[str, Any] = {
    "RejectPercentDefault": 5,
    "RejectPercentByExport": {},
    "ConfirmationWait": timedelta(hours=24),
}
"""What infra/core/alerts.bicep binds when no azd value says otherwise."""


if __name__ == "__main__":
    sys.stdout.write(queries_json())
