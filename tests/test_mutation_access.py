"""Who may see and use which connections and definitions (shared/exports/access.py), over
a catalog of the local folder kind the command line uses. A check loosened is a
contributor reading or running another team's export, or sending over a connection
that is not theirs; one tightened locks a team out of its own. The catalog here holds
one connection per team, one added again under a removed one's name, and definitions
over each of them, over one that does not exist, and over none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.exports.access import (
    Caller,
    Forbidden,
    connection_of,
    require_use,
    usable_connection,
    usable_connections,
    usable_export,
    usable_exports,
)
from shared.exports.catalog import Catalog, Connection, NotFound
from shared.exports.definitions import ExportDefinition, SegmentMatch
from shared.storage.documents import FolderDocuments

LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
MKT_ID = "0a1b2c3d4e5f6a7b"
SALES_ID = "1b2c3d4e5f6a7b8c"
OLD_ID = "2c3d4e5f6a7b8c9d"  # the id of a connection removed since, under "mkt-old"
NEW_ID = "3d4e5f6a7b8c9d0e"  # the connection added again under "mkt-old"

ANA = Caller("ana", frozenset({"marketing"}))  # a contributor of marketing
BO = Caller("bo", frozenset({"sales", "support"}))  # a contributor of sales
NOBODY = Caller("cy", frozenset())  # signed in, no role
ADMIN = Caller("di", frozenset({"admin"}))
OPERATOR = Caller("function-key", frozenset(), key_only=True)


def definition(name: str, connection: str | None, connection_id: str = "") -> ExportDefinition:
    values: dict[str, Any] = {
        "name": name,
        "list_ids": (LIST,),
        "mapping": {"email": "Email"},
        "segments": (SegmentMatch(export="HighValue", table="Contacts"),),
    }
    if connection is not None:
        values |= {"connection": connection, "connection_id": connection_id}
    return ExportDefinition(**values)


DEFINITIONS = {
    "mkt-weekly": definition("mkt-weekly", "mkt", MKT_ID),
    "sales-daily": definition("sales-daily", "sales", SALES_ID),
    "orphan": definition("orphan", "mkt-old", OLD_ID),  # saved for the removed one
    "dangling": definition("dangling", "gone", MKT_ID),  # its connection was removed
    "unsent": definition("unsent", None),  # names no connection yet
}


@pytest.fixture
async def catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog(FolderDocuments(tmp_path / "catalog"))
    for connection in (
        Connection("mkt", "Marketing", roles=("Marketing", "web"), id=MKT_ID),
        Connection("sales", "Sales", roles=("sales",), id=SALES_ID),
        Connection("mkt-old", "Marketing (again)", roles=("marketing",), id=NEW_ID),
        Connection("open", "Nobody's", id="4e5f6a7b8c9d0e1f"),  # no roles: admins only
    ):
        await catalog.save_connection(connection)
    for value in DEFINITIONS.values():
        await catalog.save_export(value)
    return catalog


async def test_a_definition_sends_only_with_the_connection_it_was_saved_for(
    catalog: Catalog,
) -> None:
    found = await connection_of(catalog, DEFINITIONS["mkt-weekly"])
    assert found is not None
    assert (found.name, found.id, found.roles) == ("mkt", MKT_ID, ("Marketing", "web"))
    sales = await connection_of(catalog, DEFINITIONS["sales-daily"])
    assert sales is not None
    assert (sales.name, sales.id) == ("sales", SALES_ID)
    # added again under the removed one's name: another connection, not this one's
    assert await connection_of(catalog, DEFINITIONS["orphan"]) is None
    assert await connection_of(catalog, DEFINITIONS["dangling"]) is None
    assert await connection_of(catalog, DEFINITIONS["unsent"]) is None


async def test_a_contributor_uses_a_definition_only_over_a_connection_of_their_role(
    catalog: Catalog,
) -> None:
    await require_use(catalog, ANA, DEFINITIONS["mkt-weekly"])  # no error: role in any case
    await require_use(catalog, BO, DEFINITIONS["sales-daily"])
    refusals = [
        (ANA, "sales-daily", "'sales'"),
        (BO, "mkt-weekly", "'mkt'"),
        (NOBODY, "mkt-weekly", "'mkt'"),
        # the connection now under that name allows marketing, but it is not the
        # definition's: only an admin reaches it, to save it again or delete it
        (ANA, "orphan", "'mkt-old'"),
        (ANA, "dangling", "'gone'"),
        (ANA, "unsent", "None"),
    ]
    for caller, name, connection in refusals:
        with pytest.raises(Forbidden) as caught:
            await require_use(catalog, caller, DEFINITIONS[name])
        assert str(caught.value) == (
            f"export '{name}': your roles do not allow its connection {connection}"
        ), (caller.id, name)
    for admin in (ADMIN, OPERATOR):
        for value in DEFINITIONS.values():
            await require_use(catalog, admin, value)  # no error


async def test_a_definition_is_read_by_name_404_when_missing_403_when_not_theirs(
    catalog: Catalog,
) -> None:
    stored = await usable_export(catalog, ANA, "mkt-weekly")
    assert stored.value == DEFINITIONS["mkt-weekly"]
    assert stored.etag
    assert (await usable_export(catalog, BO, "sales-daily")).value == DEFINITIONS["sales-daily"]
    assert (await usable_export(catalog, ADMIN, "orphan")).value == DEFINITIONS["orphan"]
    with pytest.raises(Forbidden) as forbidden:
        await usable_export(catalog, BO, "mkt-weekly")
    assert str(forbidden.value) == (
        "export 'mkt-weekly': your roles do not allow its connection 'mkt'"
    )
    with pytest.raises(Forbidden, match="'orphan'"):
        await usable_export(catalog, ANA, "orphan")
    for caller in (ANA, ADMIN):
        with pytest.raises(NotFound) as missing:
            await usable_export(catalog, caller, "mkt-monthly")
        assert str(missing.value) == "no export definition named 'mkt-monthly'"


async def test_the_definitions_listed_are_those_whose_connection_the_caller_may_use(
    catalog: Catalog,
) -> None:
    async def names(caller: Caller) -> list[str]:
        return sorted(str(stored.value.name) for stored in await usable_exports(catalog, caller))

    assert await names(ANA) == ["mkt-weekly"]  # not "orphan", though mkt-old allows marketing
    assert await names(BO) == ["sales-daily"]
    assert await names(NOBODY) == []
    everything = ["dangling", "mkt-weekly", "orphan", "sales-daily", "unsent"]
    assert await names(ADMIN) == everything
    assert await names(OPERATOR) == everything
    listed = await usable_exports(catalog, ANA)
    assert [stored.value for stored in listed] == [DEFINITIONS["mkt-weekly"]]
    assert listed[0].etag


async def test_a_connection_not_theirs_is_answered_as_unknown(catalog: Catalog) -> None:
    stored = await usable_connection(catalog, ANA, "mkt")
    assert (stored.value.name, stored.value.id) == ("mkt", MKT_ID)
    assert stored.etag
    assert (await usable_connection(catalog, ANA, "mkt-old")).value.id == NEW_ID
    assert (await usable_connection(catalog, BO, "sales")).value.id == SALES_ID
    assert (await usable_connection(catalog, ADMIN, "open")).value.name == "open"
    assert (await usable_connection(catalog, OPERATOR, "sales")).value.name == "sales"
    # one the caller may not use and one that does not exist: the same answer
    unknown = [(ANA, "sales"), (BO, "mkt"), (NOBODY, "mkt"), (ANA, "open"), (ANA, "gone")]
    for caller, name in [*unknown, (ADMIN, "gone")]:
        with pytest.raises(NotFound) as caught:
            await usable_connection(catalog, caller, name)
        assert str(caught.value) == f"no connection named {name!r}", (caller.id, name)


async def test_the_connections_listed_are_those_the_caller_may_use(catalog: Catalog) -> None:
    async def names(caller: Caller) -> list[str]:
        return sorted(stored.value.name for stored in await usable_connections(catalog, caller))

    assert await names(ANA) == ["mkt", "mkt-old"]
    assert await names(BO) == ["sales"]
    assert await names(NOBODY) == []
    assert await names(ADMIN) == ["mkt", "mkt-old", "open", "sales"]
    assert await names(OPERATOR) == ["mkt", "mkt-old", "open", "sales"]
