"""The admin console's HTTP functions: the pages of shared/console/, bound to routes
under ``/api/console/``. Thin, like the HTTP API: the page helper is ``pages``, and
each area of the console has its module."""

from functions.console import home, statics

__all__ = ["home", "statics"]
