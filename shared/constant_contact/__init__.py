"""Constant Contact: the V3 API as ccexport uses it.

``client`` (``ConstantContactClient``: imports, activities, lists, custom fields,
retries), ``pacing`` (the per-key rate and daily quota), ``tokens`` (OAuth, refresh,
the connect flow), ``connections`` (connection names), ``contacts`` (a row as an
import contact: the fields, their limits, the reasons a row is refused).
"""
