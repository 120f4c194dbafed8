"""User-space block mapping: an RBD image as a real ``/dev/loopN``.

``map_image`` starts a daemon process per image which serves the image as one
FUSE file (our own asyncio FUSE server, :mod:`.fuseproto` / :mod:`.fuseserver`:
pyfuse3 has no fallocate handler, so discard could not reach the image) and
attaches a loop device to it; ``unmap``
asks it to flush, detach and exit; ``showmapped`` lists live mappings in
``rbd showmapped --format json`` shape.  Mappings are recorded under
``$PYCEPH_RUN_DIR`` (default ``/run/pyceph``) in ``mappings/<id>.json``.
"""

from .control import (NotMapped, configure, find_mappings, info, map_image, mapping_stats, parse_target, refresh,
                      showmapped, unmap)
from .daemon import READY_FD_ENV, SPEC_ENV, read_spec, ready_fd_from_env, run_daemon, spec_from_env
from .fuseproto import FuseDecodeError, FuseSession
from .fusefile import BlockImage, FuseError, ImageFile
from .registry import RUN_DIR_ENV, run_dir

__all__ = [
    "BlockImage", "FuseDecodeError", "FuseError", "FuseSession", "ImageFile", "NotMapped", "READY_FD_ENV", "RUN_DIR_ENV", "SPEC_ENV",
    "configure", "find_mappings", "info", "map_image", "mapping_stats", "parse_target", "read_spec",
    "ready_fd_from_env", "refresh", "run_daemon", "run_dir", "showmapped", "spec_from_env", "unmap",
]
