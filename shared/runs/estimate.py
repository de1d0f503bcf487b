"""How many requests a run will make, told before it sends anything.

The daily quota plan (shared/runs/quota_plan.py) weighs this against what is left of
the API key's day. It is told once prepare has staged the import bodies and, in mirror
mode, ``find_members`` has read the lists and planned the removals, from counts alone
(no clock, no I/O), so the orchestrator can tell it on replay:

- **imports**: one request per import body still to send. A body an earlier attempt
  had accepted is answered from its mark without a request, so a resumed run is
  counted high; a request sent again after a connection error or a 5xx is not
  foreseen, so a run with resends is counted low by those.
- **status polls of the imports**: as many polls as the backoff of
  shared/runs/waits.py makes in a whole ``max_wait_seconds`` (the most the wait can
  last), plus, when the bodies outnumber ``max_pending_imports``, one poll per upload
  window that has to wait for room. One poll is one listing of the account's newest
  :data:`IDS_PER_LISTING` activities when several imports are pending (one request
  for them all), or one request for a single import; pending imports beyond a
  listing's page are each one more request a poll. Imports usually end long before
  the wait could, so this part is what makes the estimate high: it is the bound that
  keeps a run from running out of quota while it waits for its imports' end.
- **removals** (mirror mode): one request per :data:`IDS_PER_REMOVAL` members removed
  from a list, each one membership activity; their **polls** are told as the
  imports' are (removals' polls start short again, over a wait of their own).
- **members** (mirror mode): the requests that read the lists, already made and known
  exactly; counted so the estimate's total compares with the report's total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from shared.runs.contract import RunOptions
from shared.runs.quota_plan import RequestEstimate
from shared.runs.waits import polls_within

IDS_PER_LISTING = 500
"""Activities one status poll's listing answers for (the client's ``PAGE_LIMIT``)."""

IDS_PER_REMOVAL = 500
"""Contact ids one membership removal request carries (the client's
``MAX_IDS_PER_REQUEST``)."""


def poll_requests(pending: int) -> int:
    """Requests one status poll makes about ``pending`` activities (0 for none)."""
    if pending <= 0:
        return 0
    if pending == 1:
        return 1
    return 1 + max(0, pending - IDS_PER_LISTING)


def estimate_requests(
    options: RunOptions,
    *,
    bodies: int,
    member_requests: int = 0,
    removals: Iterable[int] = (),
) -> RequestEstimate:
    """The requests a run with ``bodies`` import bodies to send will make (see the
    module's docstring); ``removals``: per list, the members mirror mode removes."""
    wait_polls = polls_within(options, options.max_wait_seconds)
    polls = 0
    if bodies > 0:
        held_back = max(0, bodies - options.max_pending_imports)
        polls = wait_polls + math.ceil(held_back / options.upload_window)
    pending = min(bodies, options.max_pending_imports)
    removal_requests = sum(math.ceil(r / IDS_PER_REMOVAL) for r in removals if r > 0)
    removal_polls = wait_polls if removal_requests else 0
    return RequestEstimate(
        members=member_requests,
        imports=bodies,
        status_polls=polls * poll_requests(pending),
        removals=removal_requests,
        removal_polls=removal_polls * poll_requests(removal_requests),
    )
