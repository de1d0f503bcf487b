"""Storage: where bytes and small records live, on this machine or in Blob Storage.

Owns local folders and blob containers behind one interface (``files``), JSON
documents with ETags (``documents``), small records many processes change
atomically (``records``), a few slots shared by a machine's processes (``slots``),
cross-process locks (``locks``: files or blob leases), writing a file whole or not at
all (``atomic``), names every store accepts (``names``), Blob clients (``blobs``) and
``async with`` for async clients (``closing``).
Knows nothing of exports, runs or Constant Contact.
"""
