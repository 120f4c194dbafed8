"""Where the shared test data lives: ``../shared`` beside the repository (as in CI), or
``$PYCEPH_SHARED``.  A missing directory fails the tests that need it (never a skip)."""

import os
from pathlib import Path

SHARED = Path(os.environ.get("PYCEPH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CORPUS = SHARED / "ceph-object-corpus" / "16.2.0" / "objects"
VECTORS = SHARED / "vectors"
