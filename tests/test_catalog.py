"""The catalog: documents with ETags (Azurite and a local folder), the export
definition's new fields, connections, and deleting a connection's tokens."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from shared.constant_contact.tokens import (
    mark_needs_reauthorization,
    pending_secret,
    status_secret,
    tokens_secret,
)
from shared.errors import ConfigError
from shared.exports import definitions as exports
from shared.exports.catalog import (
    Catalog,
    Connection,
    ConnectionStatus,
    NotFound,
    connection_from_request,
)
from shared.exports.definitions import SegmentMatch
from shared.secrets.store import LocalFileSecretStore
from shared.storage.documents import (
    BlobDocuments,
    DocumentChanged,
    DocumentError,
    DocumentExists,
    Documents,
    FolderDocuments,
)
from tests.support.function_harness import AppEnv
from tests.support.services import ROOT

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
DEFINITION: dict[str, Any] = {
    "name": "high-value",
    "list_ids": [LIST_ID],
    "mapping": {"email": "PrimaryEmail"},
    "connection": "acme",
    "segments": [{"export": "BlobExport", "table": "HighValue*"}],
}


@pytest.fixture(params=["blob", "folder"])
async def documents(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Documents]:
    if request.param == "folder":
        yield FolderDocuments(tmp_path / "catalog")
        return
    app_env: AppEnv = request.getfixturevalue("app_env")
    async with BlobServiceClient.from_connection_string(app_env.connection_string) as service:
        yield BlobDocuments(service.get_container_client(app_env.exports))


async def test_documents_create_only_and_if_match(documents: Documents) -> None:
    etag = await documents.create("definitions/a.json", {"v": 1})
    with pytest.raises(DocumentExists):
        await documents.create("definitions/a.json", {"v": 2})
    found = await documents.get("definitions/a.json")
    assert found is not None
    assert found.data == {"v": 1}
    assert found.etag == etag
    newer = await documents.replace("definitions/a.json", {"v": 2}, etag)
    assert newer != etag
    with pytest.raises(DocumentChanged):
        await documents.replace("definitions/a.json", {"v": 3}, etag)  # stale
    with pytest.raises(DocumentChanged):
        await documents.delete("definitions/a.json", etag)  # stale
    with pytest.raises(DocumentChanged):
        await documents.replace("definitions/missing.json", {"v": 1}, etag)
    await documents.create("definitions/b.json", {})
    await documents.create("connections/c.json", {})
    assert await documents.names("definitions/") == ["definitions/a.json", "definitions/b.json"]
    assert await documents.delete("definitions/a.json", newer)
    assert not await documents.delete("definitions/a.json")
    assert await documents.get("definitions/a.json") is None
    for bad in ("", "/abs", "a/../b", "a//b"):
        with pytest.raises(DocumentError):
            await documents.get(bad)


async def test_blob_documents_make_a_missing_container(app_env: AppEnv) -> None:
    async with BlobServiceClient.from_connection_string(app_env.connection_string) as service:
        documents = BlobDocuments(service.get_container_client(f"{app_env.exports}-new"))
        assert await documents.names() == []
        await documents.create("x.json", {"ok": True})
        found = await documents.get("x.json")
        assert found is not None
        assert found.data == {"ok": True}


def test_definition_fields_round_trip_and_strict_validation() -> None:
    definition = exports.from_json({**DEFINITION, "enabled": False})
    assert definition.connection == "acme"
    assert definition.segments == (SegmentMatch("BlobExport", "HighValue*"),)
    assert not definition.enabled
    again = exports.from_json(definition.to_json())
    assert again == definition
    assert "enabled" not in exports.from_json(DEFINITION).to_json()  # the default stays out
    bad: list[tuple[dict[str, Any], str]] = [
        ({"segments": [{"export": "A", "folder": "x"}]}, "unknown field(s) folder"),
        ({"segments": [{}]}, "a segment must name its export"),
        ({"segments": [{"export": "A", "table": "a/b"}]}, "no '/'"),
        ({"segments": [{"export": "A", "prefix": "../x"}]}, "without a leading '/' or '..'"),
        ({"segments": "BlobExport"}, "segments must be a list"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"connection": "Acme Corp"}, "invalid connection name"),
        ({"connection": 7}, "connection must be the name of a connection"),
        ({"list_ids": ["tab\tin name"]}, "is neither a list id (a UUID) nor a list name"),
        ({"list_ids": ["  "]}, "is neither a list id"),
        ({"list_ids": ["x" * 256]}, "is neither a list id"),
        ({"list_ids": [7]}, "list_ids must be a list of list ids (UUIDs) or names"),
        ({"create_custom_fields": "yes"}, "create_custom_fields must be true or false"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            exports.from_json({**DEFINITION, **change})


def test_lists_by_id_or_name_and_create_custom_fields() -> None:
    upper = "3FA85F64-5717-4562-B3FC-2C963F66AFA6"
    definition = exports.from_json(
        {
            **DEFINITION,
            "list_ids": [f" {upper} ", "  Newsletter NL ", "Newsletter NL", "x" * 255],
            "mapping": {"email": "Mail", "cf:tier": "Tier", "first_name": "F", "cf:b2": "B"},
            "create_custom_fields": True,
        }
    )
    assert definition.list_ids == (upper.lower(), "Newsletter NL", "x" * 255)
    assert exports.list_names(definition.list_ids) == ["Newsletter NL", "x" * 255]
    assert definition.custom_field_names == ["tier", "b2"]
    assert definition.to_json()["create_custom_fields"] is True
    assert exports.from_json(definition.to_json()) == definition
    assert "create_custom_fields" not in exports.from_json(DEFINITION).to_json()
    assert not exports.from_json(DEFINITION).create_custom_fields
    flags = definition.with_overrides(list_ids=["Other list", upper])
    assert flags.list_ids == (upper.lower(), "Newsletter NL", "x" * 255, "Other list")


def test_segment_patterns_ignore_case_and_respect_the_prefix() -> None:
    by_name = SegmentMatch(export="blobexport", table="highvalue*")
    assert by_name.matches("CI/", "BlobExport", "HighValueSegment")
    assert by_name.matches("CI/", "BlobExport", "HIGHVALUE")
    assert not by_name.matches("CI/", "OtherExport", "HighValueSegment")
    assert not by_name.matches("CI/", "BlobExport", "XHighValue")
    literal = SegmentMatch(export="BlobExport", table="HighValue")
    assert literal.matches("", "blobexport", "highvalue")
    assert not literal.matches("", "BlobExport", "HighValue2")
    every_table = SegmentMatch(export="BlobExport")
    assert every_table.matches("", "BlobExport", "Lapsed")
    assert not every_table.matches("", "BlobExport2", "Lapsed")
    by_prefix = SegmentMatch(export="BlobExport", prefix="CI/BlobExport/High")
    assert by_prefix.matches("CI/", "BlobExport", "HighValue")
    assert not by_prefix.matches("", "BlobExport", "HighValue")
    assert not by_prefix.matches("CI/", "BlobExport", "Lapsed")


@pytest.mark.parametrize(
    "pattern",
    [
        "*",
        "?*",
        "**",
        "*?",
        "[!x]*",
        "?",
        "*x",
        "x*y",
        "Bl*",
        "Blob?xport",
        "[B]lobExport",
        "Blob**",
        "Blob*Export",
        "Blob\nExport",
    ],
)
def test_a_segment_pattern_that_could_match_widely_is_refused_when_saved(pattern: str) -> None:
    """No spelling of a wildcard matches every export or every table: a pattern is a
    folder name or at least three literal characters and one trailing '*'."""
    for segment in ({"export": pattern}, {"export": "BlobExport", "table": pattern}):
        field = next(k for k, v in segment.items() if v == pattern)
        with pytest.raises(ConfigError) as caught:
            exports.from_json({**DEFINITION, "segments": [segment]})
        assert f"segments[0]: segment {field} {pattern!r}: a folder name, or its first 3" in (
            str(caught.value)
        )
        assert f"so that no segment matches every {field}" in str(caught.value)
    for segment in ({"table": "HighValue"}, {"prefix": "CI/"}, {"export": ""}):
        with pytest.raises(ConfigError, match="a segment must name its export"):
            exports.from_json({**DEFINITION, "segments": [segment]})


def test_todays_example_definitions_still_load() -> None:
    """The README's definitions (both of them) and the shapes the tests save."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = [
        json.loads(m) for m in re.findall(r"\n(\{\n  \"connection\".*?\n\})\n", readme, re.S)
    ]
    examples += [
        json.loads(m)
        for m in re.findall(r"--data '(\{\"connection\".*?\})'", readme)
        if "segments" in m
    ]
    assert len(examples) == 2
    for example in examples:
        loaded = exports.from_json({**example, "name": "example"})
        assert loaded.segments == (SegmentMatch("BlobExport", "HighValueSegment"),)
    for segments in (
        [{"export": "BlobExport", "table": "HighValue*"}],
        [{"export": "BlobExport"}],
        [{"export": "Blob*", "table": "HighValue", "prefix": "CI/"}],
    ):
        loaded = exports.from_json({**DEFINITION, "segments": segments})
        assert [s.to_json() for s in loaded.segments] == segments


def test_connection_requests_record_consent_by_id_and_keep_server_fields() -> None:
    created = connection_from_request(
        "acme",
        {"display_name": "Acme CC", "roles": ["marketing"], "privacy_consent": {"accepted": True}},
        principal_id="oid-1",
        existing=None,
        now="2026-11-28T09:00:00Z",
    )
    assert created.consent is not None
    assert (created.consent.accepted_by, created.consent.accepted_at) == (
        "oid-1",
        "2026-11-28T09:00:00Z",
    )
    assert created.status is ConnectionStatus.NOT_CONNECTED
    connected = Connection(**{**created.__dict__, "status": ConnectionStatus.CONNECTED})
    renamed = connection_from_request(
        "acme", {"display_name": "Acme"}, principal_id="oid-2", existing=connected
    )
    assert renamed.consent == created.consent  # the first acceptance is kept
    assert renamed.status is ConnectionStatus.CONNECTED
    assert renamed.roles == ("marketing",)
    withdrawn = connection_from_request(
        "acme", {"privacy_consent": {"accepted": False}}, principal_id="oid-2", existing=renamed
    )
    assert withdrawn.consent is None
    for body, message in [
        ({"roles": "marketing"}, "roles must be a list"),
        ({"roles": ["a b"]}, "roles must be a list"),
        ({"privacy_consent": True}, "privacy_consent must be"),
        ({"status": "connected"}, "unknown field"),
        ({"name": "other"}, "the body names"),
        ({"display_name": ""}, "display_name"),
    ]:
        with pytest.raises(ConfigError, match=message):
            connection_from_request("acme", body, principal_id="x", existing=None)
    assert Connection("acme", "Acme", roles=("Marketing",)).allows({"marketing", "x"})
    assert not Connection("acme", "Acme", roles=("sales",)).allows({"marketing"})


async def test_catalog_exports_and_connections(app_env: AppEnv, tmp_path: Path) -> None:
    store = LocalFileSecretStore(tmp_path / "secrets")
    async with BlobServiceClient.from_connection_string(app_env.connection_string) as service:
        catalog = Catalog(BlobDocuments(service.get_container_client(app_env.exports)), store)
        definition = exports.from_json(DEFINITION)
        etag = await catalog.save_export(definition)
        with pytest.raises(DocumentExists):
            await catalog.save_export(definition)
        stored = await catalog.require_export("high-value")
        assert stored.value == definition
        assert stored.etag == etag
        assert [s.value.name for s in await catalog.exports()] == ["high-value"]
        await catalog.documents.create("definitions/broken.json", {"name": "broken"})
        assert [s.value.name for s in await catalog.exports()] == ["high-value"]  # skipped
        with pytest.raises(ConfigError, match="no list id"):
            await catalog.export("broken")
        with pytest.raises(NotFound):
            await catalog.require_export("nope")
        with pytest.raises(ConfigError):
            await catalog.export("Not/A/Name")
        assert await catalog.delete_export("high-value", etag)
        assert await catalog.export("high-value") is None

        connection = Connection("acme", "Acme", roles=("marketing",))
        await catalog.save_connection(connection)
        assert (await catalog.require_connection("acme")).value == connection
        marked = await catalog.mark_connected("acme")
        assert marked.status is ConnectionStatus.CONNECTED
        assert marked.connected_at is not None
        assert await catalog.status_of(marked) is ConnectionStatus.CONNECTED
        await mark_needs_reauthorization(store, "acme", "refresh token refused")
        assert await catalog.status_of(marked) is ConnectionStatus.NEEDS_REAUTHORISATION

        for secret in (tokens_secret("acme"), pending_secret("acme")):
            await store.set(secret, '{"x": 1}')
        stale = (await catalog.require_connection("acme")).etag
        await catalog.save_connection(
            Connection("acme", "Acme 2", roles=("marketing",)),
            stale,
        )
        with pytest.raises(DocumentChanged):
            await catalog.delete_connection("acme", stale)
        assert await store.get(tokens_secret("acme")) is not None  # nothing deleted yet
        assert await catalog.delete_connection("acme")
        for secret in (tokens_secret("acme"), status_secret("acme"), pending_secret("acme")):
            assert await store.get(secret) is None, secret
        assert await catalog.connection("acme") is None
        assert not await catalog.delete_connection("acme")


async def test_authorizations_in_flight_are_found_by_state_and_expire(app_env: AppEnv) -> None:
    async with BlobServiceClient.from_connection_string(app_env.connection_string) as service:
        documents = BlobDocuments(service.get_container_client(app_env.exports))
        catalog = Catalog(documents)
        await catalog.remember_authorization("state-1", "acme", ttl=600)
        await catalog.remember_authorization("state-2", "other", ttl=-1)
        assert await catalog.authorization_connection("state-1") == "acme"
        assert await catalog.authorization_connection("forged") is None
        assert await catalog.authorization_connection("state-2") is None  # expired, removed
        names = await documents.names("oauth-states/")
        assert len(names) == 1
        assert "state-1" not in names[0]  # the state itself is not stored here
        await catalog.forget_authorization("state-1")
        assert await catalog.authorization_connection("state-1") is None
