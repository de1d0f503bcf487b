"""Prepare: segment rows in; import request bodies and an account of every row out.

``pipeline.prepare`` is the entry. Each block takes the columnar path (``columnar``,
Arrow) when ``plain`` finds it plainly clean, else the row path (``rows``); both give a
``results.BlockResult``. ``workers`` runs blocks on threads or processes, ``seen_keys``
finds duplicates across blocks, ``chunks`` packs bodies, ``outputs`` writes them with
the rejects and the summary.
"""
