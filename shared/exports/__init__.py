"""Exports: what an admin defined, and what an export remembers between runs.

``definitions`` (``ExportDefinition``: lists, mapping, segments, mode), ``catalog``
(definitions and connections as documents), ``state`` and ``keys`` (the snapshot of
the last run), ``changes`` (new or changed contacts against it) and ``account`` (the
connected account's lists and custom fields, checked before a run).
"""
