"""The console's connections pages (see functions/console/pages.py for the page helper)."""

from __future__ import annotations

import azure.durable_functions as df

bp = df.Blueprint()
