"""The HTTP API: export definitions, runs, connections and the API key's usage, one
module each; every route has one shape (routes.py), and who may do what is decided in
shared/ (shared.exports.access, read from the caller's headers by functions/principal.py).

Answers are JSON, but for the OAuth callback's page. An error is
``{"error": "<one sentence>"}`` with a status that says its kind (400 invalid input,
403 not allowed, 404 unknown, 409 conflicts with what is there, 412 stale ETag); a
5xx says only what kind of thing failed and adds ``"correlation_id"``, the id of the
log line with the detail. Never a stack trace, a token, a key or an email address.
Definitions and connections carry ETags: send ``If-Match`` to update or delete what
you read; a PUT without it only creates.
"""

# function_app.py registers each module's blueprint; the route functions are named
# here too, as one API.
from functions.http_api import connections, exports, runs, usage
from functions.http_api.connections import (
    CALLBACK_ROUTE,
    connection_connect,
    connection_custom_fields,
    connection_item,
    connection_lists,
    connections_list,
    oauth_callback,
)
from functions.http_api.exports import export_item, exports_list
from functions.http_api.runs import export_runs, run_item, runs_list
from functions.http_api.usage import key_usage

__all__ = [
    "CALLBACK_ROUTE",
    "connection_connect",
    "connection_custom_fields",
    "connection_item",
    "connection_lists",
    "connections",
    "connections_list",
    "export_item",
    "export_runs",
    "exports",
    "exports_list",
    "key_usage",
    "oauth_callback",
    "run_item",
    "runs",
    "runs_list",
    "usage",
]
