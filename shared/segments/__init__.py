"""Segments: what Customer Insights writes, read as it is written.

The layout of one segment run folder (``layout``: ``Segment``, ``Part``, model.json),
the inbox that finds complete run folders and their run keys (``inbox``), and cutting
parts into blocks of whole records (``blocks``).
"""
