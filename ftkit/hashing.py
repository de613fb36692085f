"""The one home of file hashing: the SHA-256 of a file, read in 1 MiB blocks (memory stays flat
however large the file -- model weights included).

Used by the upload record (:mod:`ftkit.jobs`), the migration snapshot (:mod:`ftkit.migrate`), the
local server's model check (:mod:`ftkit.local.inference.weights`) and the export's model card
(:mod:`ftkit.local.export`). Torch-free and dependency-free.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
