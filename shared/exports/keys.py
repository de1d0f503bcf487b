"""The 8-byte keys snapshots hold: an email's key and a contact's digest.

Light on purpose (xxhash only): prepare's worker processes hash every kept contact
with it, and the snapshot code compares the same keys.
"""

from __future__ import annotations

from xxhash import xxh3_64_digest


def hash8(data: bytes) -> bytes:
    """The 8-byte hash snapshots use (keys of emails, digests of contacts): XXH3-64.

    Not cryptographic, and needs not be: it tells contacts apart, it guards nothing.
    Speed is why: prepare takes two hashes of every contact, and a cryptographic hash
    such as BLAKE2b costs much more a call.
    """
    return xxh3_64_digest(data)
