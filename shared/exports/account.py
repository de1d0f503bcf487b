"""What a connected Constant Contact account holds, checked before a run sends anything.

- **Lists by id or by name.** An export definition's ``list_ids`` and ``--list-id``
  take a list's id (a UUID) or its name. Names are resolved here, against the
  account's lists, once before a run starts (``ccexport run``'s preflight, the
  function app's run start): the run itself carries ids. A name matches a list of
  exactly that name, else the one list whose name differs only in case; none, or
  more than one, is a one-line error naming the close matches.
- **Custom fields.** Every mapped ``cf:NAME`` must be the ``name`` of a custom field
  of the account: Constant Contact does not refuse an import that names an unknown
  one, it leaves its values out and says so only in each import's errors. A missing
  field is a one-line error naming it and the fields there are, closest first. With
  ``create`` (``--create-fields``, ``"create_custom_fields": true``) the missing ones
  are created first, as text fields, within the account's limit of 100.

Messages never hold a token; names are passed through ``scrub`` (no email address).
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from shared.config import Settings
from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.connect import Connections
from shared.constant_contact.connections import DEFAULT_CONNECTION
from shared.constant_contact.models import ContactList, CustomField
from shared.constant_contact.pacing import Pacer
from shared.constant_contact.tokens import read_status
from shared.constant_contact.transport import scrub
from shared.errors import InputError, ReauthorizationRequired, RemoteError
from shared.exports.definitions import ExportDefinition, check_list_id, is_list_uuid, list_names

MAX_ACCOUNT_CUSTOM_FIELDS = 100  # an account's limit (contract/constant-contact-v3.yaml)
CLOSE_MATCHES = 3
FIELDS_SHOWN = 10
NEW_FIELD_TYPE = "string"


@dataclass(frozen=True)
class AccountCheck:
    """What the account showed: the export's lists and its custom fields."""

    lists: tuple[ContactList, ...]
    """The lists asked for, resolved, in the order given (each once)."""
    names: Mapping[str, str] = field(default_factory=dict)
    """Each list name given -> the id it resolved to."""
    custom_fields: tuple[str, ...] = ()
    """The mapped custom fields, all present in the account now."""
    created_fields: tuple[str, ...] = ()
    """Those created by this check."""

    @property
    def list_ids(self) -> tuple[str, ...]:
        return tuple(lst.list_id for lst in self.lists)

    def applied_to(self, definition: ExportDefinition) -> ExportDefinition:
        """The definition with its lists as ids: what a run is given."""
        return replace(definition, list_ids=self.list_ids)


def needs_account(definition: ExportDefinition) -> bool:
    """Whether a run of this definition must look at the account before it starts:
    list names to resolve, or custom fields to verify (or create)."""
    return bool(list_names(definition.list_ids) or definition.custom_field_names)


async def check_account(
    client: ConstantContactClient,
    list_refs: Sequence[str],
    custom_fields: Sequence[str],
    *,
    connection: str,
    create_fields: bool = False,
) -> AccountCheck:
    """Resolve the lists (ids or names) and verify (or create) the custom fields."""
    lists, names = await resolve_lists(client, list_refs, connection=connection)
    present, created = await ensure_custom_fields(
        client, custom_fields, connection=connection, create=create_fields
    )
    return AccountCheck(tuple(lists), names, tuple(present), tuple(created))


async def preflight(
    client: ConstantContactClient,
    definition: ExportDefinition,
    *,
    connection: str,
    create_fields: bool = False,
    always: bool = False,
) -> ExportDefinition:
    """The definition with its lists as ids, once its lists and custom fields hold.

    Sends nothing when there is nothing to look at (ids only, no custom field), unless
    ``always``: the command line confirms even lists given by id before it starts."""
    if not always and not needs_account(definition):
        return definition
    checked = await check_account(
        client,
        definition.list_ids,
        definition.custom_field_names,
        connection=connection,
        create_fields=create_fields or definition.create_custom_fields,
    )
    return checked.applied_to(definition)


# --- lists -----------------------------------------------------------------------------------


async def resolve_lists(
    client: ConstantContactClient, refs: Sequence[str], *, connection: str
) -> tuple[list[ContactList], dict[str, str]]:
    """The lists behind ids and names, in order, each once; InputError naming what is
    not there. One request for a single id, else one listing of the account's lists."""
    wanted = list(dict.fromkeys(refs))
    if len(wanted) == 1 and is_list_uuid(wanted[0]):
        try:
            return [await client.get_list(wanted[0])], {}
        except RemoteError as exc:
            if exc.status == 404:
                raise InputError(_missing_ids(wanted, connection)) from None
            raise
    everything = await client.lists(membership_count=True) if wanted else []
    by_id = {lst.list_id: lst for lst in everything}
    found: dict[str, ContactList] = {}
    names: dict[str, str] = {}
    missing: list[str] = []
    problems: list[str] = []
    for ref in wanted:
        if is_list_uuid(ref):
            lst = by_id.get(ref)
            if lst is None:
                missing.append(ref)
                continue
        else:
            try:
                lst = list_by_name(ref, everything, connection=connection)
            except InputError as exc:
                problems.append(str(exc))
                continue
            names[ref] = lst.list_id
        found.setdefault(lst.list_id, lst)
    if missing:
        problems.insert(0, _missing_ids(missing, connection))
    if problems:
        raise InputError("; ".join(problems))
    return list(found.values()), names


def list_by_name(name: str, lists: Sequence[ContactList], *, connection: str) -> ContactList:
    """The list of this name: exactly, else the only one that differs in case alone."""
    for matches in (
        [lst for lst in lists if lst.name == name],
        [lst for lst in lists if lst.name.casefold() == name.casefold()],
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(f"{lst.name!r} ({lst.list_id})" for lst in matches[:5])
            raise InputError(
                scrub(
                    f"list name {name!r} is ambiguous in the account of connection "
                    f"{connection!r}: it matches {shown}; give the list's id instead"
                )
            )
    close = _close(name, [lst.name for lst in lists])
    hint = (
        f"close matches: {', '.join(repr(n) for n in close)}"
        if close
        else "no list has a similar name (`ccexport lists` shows them all)"
    )
    raise InputError(
        scrub(f"no list named {name!r} in the account of connection {connection!r}; {hint}")
    )


def _missing_ids(ids: Sequence[str], connection: str) -> str:
    if len(ids) == 1:
        return f"list {ids[0]} does not exist in the account of connection {connection!r}"
    return f"lists {', '.join(ids)} do not exist in the account of connection {connection!r}"


def _close(word: str, candidates: Sequence[str]) -> list[str]:
    """The candidates most like ``word`` (difflib, case ignored), best first."""
    folded: dict[str, str] = {}
    for candidate in candidates:
        folded.setdefault(candidate.casefold(), candidate)
    found = difflib.get_close_matches(word.casefold(), list(folded), n=CLOSE_MATCHES, cutoff=0.6)
    return [folded[f] for f in found]


def closest_first(word: str, candidates: Sequence[str]) -> list[str]:
    """Every candidate, the most like ``word`` first (difflib's ratio, case ignored)."""
    key = word.casefold()

    def likeness(candidate: str) -> float:
        return difflib.SequenceMatcher(None, key, candidate.casefold()).ratio()

    return sorted(dict.fromkeys(candidates), key=lambda c: (-likeness(c), c.casefold()))


# --- custom fields ---------------------------------------------------------------------------


async def ensure_custom_fields(
    client: ConstantContactClient, wanted: Sequence[str], *, connection: str, create: bool
) -> tuple[list[str], list[str]]:
    """Check that the account has a custom field of each name; with ``create``, make
    those it lacks first. Returns (the names, those created). No request for none."""
    names = list(dict.fromkeys(wanted))
    if not names:
        return [], []
    existing = await client.custom_fields()
    have = {f.name for f in existing}
    missing = [name for name in names if name not in have]
    if not missing:
        return names, []
    if not create:
        raise InputError(_missing_fields(missing, existing, connection))
    _check_creatable(missing, existing, connection)
    created: list[str] = []
    for name in missing:
        made = await _create_field(client, name, connection)
        if made:
            created.append(name)
    return names, created


def _missing_fields(
    missing: Sequence[str], existing: Sequence[CustomField], connection: str
) -> str:
    what = (
        f"custom field cf:{missing[0]} does not exist"
        if len(missing) == 1
        else f"custom fields {', '.join('cf:' + m for m in missing)} do not exist"
    )
    if existing:
        ranked = closest_first(missing[0], [f.name for f in existing])
        more = len(ranked) - FIELDS_SHOWN
        shown = ", ".join(ranked[:FIELDS_SHOWN]) + (f" and {more} more" if more > 0 else "")
        near = "" if len(missing) == 1 else f" to cf:{missing[0]}"
        there = f"its custom fields, closest{near} first: {shown}"
    else:
        there = "it has no custom fields"
    return scrub(
        f"{what} in the account of connection {connection!r} ({there}); create "
        f"{'it' if len(missing) == 1 else 'them'} in Constant Contact, or let ccexport "
        'create them: --create-fields, or "create_custom_fields": true in the definition'
    )


def _check_creatable(
    missing: Sequence[str], existing: Sequence[CustomField], connection: str
) -> None:
    folded = {f.name.casefold(): f.name for f in existing}
    clashes = [f"cf:{name} (the account has cf:{folded[name.casefold()]})" for name in missing
               if name.casefold() in folded]  # fmt: skip
    if clashes:
        raise InputError(
            scrub(
                f"custom field {', '.join(clashes)}: names that differ only in case cannot "
                f"both exist in the account of connection {connection!r}; map the field "
                "by its name as Constant Contact has it"
            )
        )
    total = len(existing) + len(missing)
    if total > MAX_ACCOUNT_CUSTOM_FIELDS:
        raise InputError(
            f"creating custom field(s) {', '.join('cf:' + m for m in missing)} would give the "
            f"account of connection {connection!r} {total} custom fields; Constant Contact "
            f"allows {MAX_ACCOUNT_CUSTOM_FIELDS} (it has {len(existing)}): delete unused ones "
            "in Constant Contact or map fewer"
        )


async def _create_field(client: ConstantContactClient, name: str, connection: str) -> bool:
    """Create one custom field whose name is ``name`` (its label is the name, so the
    name Constant Contact makes from it is the same). False when another run made it
    first (409 and now there)."""
    try:
        made = await client.create_custom_field(name, field_type=NEW_FIELD_TYPE)
    except RemoteError as exc:
        if exc.status == 409 and name in {f.name for f in await client.custom_fields()}:
            return False
        if exc.status in {400, 409}:
            raise InputError(
                f"custom field cf:{name} could not be created in the account of connection "
                f"{connection!r}: {exc}"
            ) from None
        raise
    if made.name != name:
        raise InputError(
            scrub(
                f"Constant Contact named the new custom field {made.name!r}, not {name!r}; "
                f"map cf:{made.name} instead"
            )
        )
    return True


# --- the function app's access to its connections' accounts -----------------------------------


ConnectionsFactory = Callable[[], Awaitable[Connections]]


class AccountAccess:
    """Constant Contact clients for connections whose tokens the secret store holds:
    the HTTP API's list and custom-field routes, and the preflight of a run start."""

    def __init__(self, settings: Settings, connections: ConnectionsFactory, pacer: Pacer) -> None:
        self.settings = settings
        self._connections = connections
        self.pacer = pacer
        """The process's pacer for the API key (shared.wiring.run_pacer)."""

    @asynccontextmanager
    async def client(self, connection: str) -> AsyncIterator[ConstantContactClient]:
        """A client with the connection's tokens; ReauthorizationRequired when they are
        gone or refused."""
        connections = await self._connections()
        marked = await read_status(connections.store, connection)
        if marked is not None:
            raise ReauthorizationRequired(connection, marked)
        manager = connections.tokens(connection)
        async with ConstantContactClient(
            self.settings.api_base, manager.access_token, self.pacer
        ) as client:
            yield client

    async def preflight(self, definition: ExportDefinition) -> ExportDefinition:
        """What a run of the definition is started with: its lists as ids, its custom
        fields verified (created when the definition says so). No request when there
        is nothing to look at."""
        if not needs_account(definition):
            return definition
        connection = definition.connection or DEFAULT_CONNECTION
        async with self.client(connection) as client:
            return await preflight(client, definition, connection=connection)


# --- what `ccexport lists` and the HTTP API show and create -------------------------------------


async def account_lists(client: ConstantContactClient) -> list[ContactList]:
    """The account's lists with their member counts, by name."""
    found = await client.lists(membership_count=True)
    return sorted(found, key=lambda lst: (lst.name.casefold(), lst.name, lst.list_id))


async def account_custom_fields(client: ConstantContactClient) -> list[CustomField]:
    """The account's custom fields, by name."""
    found = await client.custom_fields()
    return sorted(found, key=lambda f: (f.name.casefold(), f.name))


def new_list_name(value: object) -> str:
    """The name of a list to create: what a list name may be, and not a list id."""
    if not isinstance(value, str):
        raise InputError("a new list needs a name (a string of 1-255 characters)")
    name = check_list_id(value)
    if is_list_uuid(name):
        raise InputError(f"{value!r} is a list id; a new list needs a name")
    return name


# --- documents for the HTTP API and --json -----------------------------------------------------


def list_document(lst: ContactList) -> dict[str, Any]:
    return {"list_id": lst.list_id, "name": lst.name, "membership_count": lst.membership_count}


def field_document(custom: CustomField) -> dict[str, Any]:
    return {
        "custom_field_id": custom.custom_field_id,
        "name": custom.name,
        "label": custom.label,
        "type": custom.type,
    }
