"""Scale: the sandbox holds 1,000,000 contacts, takes them in quickly, and stays small.

The full-size figures (8-field contacts in ~4 MB bodies) come from ``make bench``
(bench/bench_sandbox.py); this test keeps the contacts minimal so the run stays short,
and checks what must hold at that size: every contact arrives, lookups and paging
still work at the far end, and memory stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp
import psutil  # type: ignore[import-untyped]  # no stubs pinned

from tests.support.sandbox_api import api_for
from tests.support.sandbox_service import RunningSandbox

MILLION = 1_000_000
PER_BODY = 40_000  # the per-request maximum; minimal contacts keep each body ~1.3 MB


async def test_a_million_contacts(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    sandbox = sandbox_factory(rate_limit=0, daily_quota=0, activity_delay=0, import_rate=10_000_000)
    list_id = sandbox.create_list()
    head = b'{"list_ids":["' + list_id.encode() + b'"],"import_data":['
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        api = api_for(sandbox, session)
        headers = {"Content-Type": "application/json"}
        activity_ids: list[str] = []
        for first in range(0, MILLION, PER_BODY):
            contacts = b",".join(
                b'{"email":"m%d@scale.example.com"}' % i for i in range(first, first + PER_BODY)
            )
            reply = await api.call(
                "POST",
                "/activities/contacts_json_import",
                data=head + contacts + b"]}",
                headers=headers,
            )
            assert reply.status == 201, reply.body
            activity_ids.append(reply.body["activity_id"])
        done = [await api.wait_activity(activity_id, timeout=60) for activity_id in activity_ids]
        elapsed = time.monotonic() - started
        assert sum(d["status"]["person_count"] for d in done) == MILLION
        listed = await api.get(f"/contact_lists/{list_id}?include_membership_count=all")
        assert listed.body["membership_count"] == MILLION
        last = await api.get("/contacts?email=m999999@scale.example.com&include=list_memberships")
        assert last.body["contacts"][0]["list_memberships"] == [list_id]
        page = await api.get(f"/contacts?lists={list_id}&limit=500")
        assert len(page.body["contacts"]) == 500
        assert page.body["_links"]["next"]["href"].startswith("/v3/contacts?cursor=")
    rss = psutil.Process(sandbox.pid).memory_info().rss
    assert sandbox.stats()["contacts"] == MILLION
    members = sandbox.members(list_id)
    assert len(members) == MILLION
    assert members[-1] == "m999999@scale.example.com"
    assert elapsed < 45, f"a million contacts took {elapsed:.1f} s"
    assert rss < 700 * 2**20, f"sandbox RSS {rss / 2**20:.0f} MB"
