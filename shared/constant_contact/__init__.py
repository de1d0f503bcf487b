"""Constant Contact: the V3 API as ccexport uses it.

- ``client``: ``ConstantContactClient``, one method per endpoint (imports, activities,
  lists, custom fields, contacts, memberships, exports).
- ``transport``: how a request is sent: the aiohttp session, the pacer hook, the
  retries (``RetryPolicy``), what a refusal means, and ``scrub`` for error text.
- ``models``: what the API answers, as typed objects (``Activity``, ``ContactList``,
  ``CustomField``, ``Contact``).
- ``pacing``: the per-key rate and daily quota.
- ``oauth``: the authorization server: PKCE, the token endpoint, ``TokenBundle``.
- ``tokens``: one connection's access token (``TokenManager``: refresh under a lock,
  rotation) and the names of the secrets a connection keeps.
- ``connect``: connecting an account (``Connections``: start and complete an
  authorization, hand out token managers).
- ``connections``: connection names.
- ``contacts``: a row as an import contact: the fields, their limits, the reasons a
  row is refused.
"""
