"""The admin console's HTTP functions: the pages of shared/console/, bound to routes
under ``/api/console/``. Thin, like the HTTP API: the page helper is ``pages``, and
each area of the console has its module."""

from functions.console import connections, exports, home, runs, statics

__all__ = ["connections", "exports", "home", "runs", "statics"]
