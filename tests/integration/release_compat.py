"""What a given Ceph release's ``rbd`` prints, for tests that compare prbd/pyceph with
that release's ``rbd`` as the oracle.

prbd follows the newest release (Tentacle, 20.2).  Where older releases print something
else, tests turn prbd's output into the oracle's form (``to_release_form``) or check
the known divergence explicitly (``assert_diff_matches``).  The differences, found by
running Pacific 16.2.15's, Reef 18.2.7's and Tentacle 20.2.4's own ``rbd`` against the
same images of one cluster:

- ``rbd snap ls --all``: a trash snapshot is ``trash (user p)`` in 20 (column widened
  to fit), ``trash (p)`` in 16 and 18; JSON ``"namespace"`` gains
  ``"original_namespace_type": "user"`` before ``"original_name"`` in 20.
- ``rbd diff`` (and ``rbd du --exact`` or without fast-diff, which sum it): an object
  truncated by a shrink under a snapshot.  librados 18+ stops counting the cut bytes as
  changed (16 reports the extent the object had before the cut), and with
  ``--whole-object`` on the list_snaps path 18+ reports such an object whole as data
  where 16 reports data plus the cut range as zero.  Reef and Tentacle agree.

``rbd_major(cluster)`` gives the oracle's major version.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from . import helpers

PACIFIC, QUINCY, REEF, SQUID, TENTACLE = 16, 17, 18, 19, 20
#: the release prbd's output follows
NEWEST = TENTACLE
RELEASE_MAJOR = {"pacific": PACIFIC, "quincy": QUINCY, "reef": REEF, "squid": SQUID, "tentacle": TENTACLE}

_VERSION_RE = re.compile(r"ceph version (\d+)\.")
_majors: dict[str, int] = {}


def parse_major(text: Any) -> int:
    """A major version from a release name (``"reef"``), a version (``"18.2.7"``, 18) or
    ``ceph --version`` text (``ceph version 20.2.4 (...) tentacle (stable)``).  ValueError
    otherwise."""
    if isinstance(text, int):
        return text
    if isinstance(getattr(text, "major", None), int):  # pyceph.cluster.CephRelease
        return int(text.major)
    s = str(text).strip()
    if s.lower() in RELEASE_MAJOR:
        return RELEASE_MAJOR[s.lower()]
    m = _VERSION_RE.search(s) or re.match(r"(\d+)(?:\.|$)", s)
    if not m:
        raise ValueError(f"no Ceph version in {s!r}")
    return int(m.group(1))


def rbd_major(cluster) -> int:
    """The major version of the ``rbd`` the tests use as oracle for ``cluster``: the
    cluster's release as the launcher records it (``cluster.release`` /
    ``cluster.ceph_version``), else what that ``rbd --version`` prints."""
    for attr in ("release", "ceph_version"):
        v = getattr(cluster, attr, None)
        if v is not None and not callable(v):
            try:
                return parse_major(v)
            except ValueError:
                pass
    key = str(cluster.conf_path)
    if key not in _majors:
        out = helpers.rbd(cluster, "--version").stdout.decode()
        _majors[key] = parse_major(out)
    return _majors[key]


# ---------------------------------------------------------------------------
# snap ls --all: trash snapshots


_TRASH_20 = re.compile(r"^trash \((\S+) (.*)\)$")


def _dump_like(obj: Any, original: str) -> str:
    """JSON in the encoding of ``original`` (rbd's compact form, or ``--pretty-format``)."""
    if "\n    " in original:
        return json.dumps(obj, indent=4) + "\n"
    return json.dumps(obj, separators=(",", ":")) + "\n"


def snap_ls_to_release(out: str, major: int) -> str:
    """prbd's ``snap ls [--all]`` output (plain table or JSON, as rbd 20 prints it) in
    the form release ``major`` prints."""
    if major >= TENTACLE:
        return out
    if out.lstrip().startswith("["):
        snaps = json.loads(out)
        for s in snaps:
            s.get("namespace", {}).pop("original_namespace_type", None)
        return _dump_like(snaps, out)
    lines = out.split("\n")
    if not lines or "NAMESPACE" not in lines[0]:
        return out
    col = lines[0].index("NAMESPACE")  # the last column, padded to its width
    cells = [ln[col:].rstrip() for ln in lines if ln]
    cells = [_TRASH_20.sub(r"trash (\2)", c) for c in cells]
    width = max(len(c) for c in cells)
    it = iter(cells)
    return "\n".join(ln[:col] + next(it).ljust(width) if ln else ln for ln in lines)


def to_release_form(out: str, major: int, command: str = "snap ls") -> str:
    """prbd's output of ``command`` in the form release ``major``'s rbd prints.  Only
    ``snap ls`` differs in form; diff/du differences depend on the objects' history and
    are checked with :func:`assert_diff_matches`."""
    if command == "snap ls":
        return snap_ls_to_release(out, major)
    return out


def trash_namespace(original_name: str, major: int) -> dict[str, str]:
    """The JSON ``"namespace"`` of a trash snapshot in release ``major``'s ``snap ls``."""
    if major >= TENTACLE:
        return {"type": "trash", "original_namespace_type": "user", "original_name": original_name}
    return {"type": "trash", "original_name": original_name}


# ---------------------------------------------------------------------------
# diff extents


def _per_object(entries: Iterable[dict], object_size: int) -> dict[int, list[tuple[int, int, bool]]]:
    out: dict[int, list[tuple[int, int, bool]]] = {}
    for e in entries:
        off, ln, ex = int(e["offset"]), int(e["length"]), e["exists"] in (True, "true")
        while ln:
            objno = off // object_size
            n = min(ln, (objno + 1) * object_size - off)
            out.setdefault(objno, []).append((off, n, ex))
            off, ln = off + n, ln - n
    return out


def _cover_len(pieces: list[tuple[int, int, bool]]) -> tuple[int, int]:
    lo = min((o for o, _, _ in pieces), default=0)
    hi = max((o + n for o, n, _ in pieces), default=0)
    return lo, hi


def assert_diff_matches(ours: list[dict], theirs: list[dict], major: int, truncated: set[int],
                        object_size: int) -> list[int]:
    """``rbd diff --format json`` entries: prbd's (``ours``) against release ``major``'s
    (``theirs``).  18+: equal.  16: equal except in objects of ``truncated`` (objects
    whose clone list shows a truncation under a snapshot), where 16 reports at least
    the range prbd does (the extent before the cut; the cut range as zero with
    --whole-object).  Returns the objects where 16 differed (empty for 18+)."""
    if major >= REEF:
        assert ours == theirs
        return []
    a, b = _per_object(ours, object_size), _per_object(theirs, object_size)
    differ = sorted(o for o in set(a) | set(b) if _merge(a.get(o, [])) != _merge(b.get(o, [])))
    for objno in differ:
        assert objno in truncated, (objno, a.get(objno), b.get(objno))
        if a.get(objno):
            lo, hi = _cover_len(a[objno])
            tlo, thi = _cover_len(b.get(objno, []))
            assert tlo <= lo and hi <= thi, (objno, a.get(objno), b.get(objno))
    return differ


def _merge(pieces: list[tuple[int, int, bool]]) -> list[tuple[int, int, bool]]:
    out: list[tuple[int, int, bool]] = []
    for o, n, ex in sorted(pieces):
        if out and out[-1][2] == ex and out[-1][0] + out[-1][1] == o:
            out[-1] = (out[-1][0], out[-1][1] + n, ex)
        else:
            out.append((o, n, ex))
    return out


def truncated_objects(snapsets: dict[int, Any]) -> set[int]:
    """Objects (``{objectno: SnapSet}``, pyceph.rbd.object_map.list_snaps answers) with a
    clone larger than the clone or head after it: cut by a shrink under a snapshot."""
    out = set()
    for objno, ss in snapsets.items():
        sizes = [c.size for c in ss.clones]
        if any(b < a for a, b in zip(sizes, sizes[1:])):
            out.add(objno)
    return out
