"""RADOS striping: map an image (file) byte range onto data objects.

The layout is Ceph's ``file_layout_t``: data is cut into *stripe units* of
``stripe_unit`` bytes that are dealt round-robin over ``stripe_count`` objects
(an *object set*); once each object of the set holds ``object_size`` bytes the
next object set starts.  With the RBD default (``stripe_unit == object_size``,
``stripe_count == 1``) image byte ``x`` simply lives in object ``x // object_size``.

The mapping follows ``ceph_calc_file_object_mapping()`` and
``ceph_file_to_extents()`` in the kernel's ``net/ceph/striper.c`` and
``Striper::file_to_extents()`` in Ceph's ``src/osdc/Striper.cc``: stripe units
that land next to each other in the same object are merged into one object
extent, and each object extent keeps the list of caller-buffer pieces it maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidArgumentError

#: ``RBD_DATA_PREFIX`` (src/include/rbd_types.h)
RBD_DATA_PREFIX = "rbd_data."


def data_object_name(object_prefix: str, objectno: int) -> str:
    """Name of data object ``objectno``: ``"<object_prefix>.%016x"``.

    ``object_prefix`` is the header's ``object_prefix`` (``rbd_data.<id>`` for
    format 2 images); the suffix is 16 lower-case hex digits (``RBD_V2_DATA_FORMAT``
    in the kernel's ``drivers/block/rbd_types.h``).
    """
    return f"{object_prefix}.{objectno:016x}"


@dataclass(slots=True)
class ObjectExtent:
    """A contiguous byte range of one data object.

    ``objectno``: object number; ``offset``/``length``: byte range inside the object;
    ``buffer_extents``: ``(buffer_offset, length)`` pieces of the caller's buffer,
    relative to the start of the mapped file range, in object-offset order (they
    add up to ``length``).  Mirrors ``ObjectExtent`` in ``src/osdc/Striper.h``.
    """

    objectno: int
    offset: int
    length: int
    buffer_extents: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Layout:
    """``file_layout_t`` subset used by RBD: sizes in bytes.

    Raises :class:`InvalidArgumentError` unless ``stripe_unit > 0``,
    ``stripe_count >= 1`` and ``object_size`` is a positive multiple of
    ``stripe_unit`` (``file_layout_t::is_valid()`` in ``src/common/fs_types.cc``).
    """

    object_size: int
    stripe_unit: int
    stripe_count: int

    def __post_init__(self) -> None:
        validate_layout(self.object_size, self.stripe_unit, self.stripe_count)

    @classmethod
    def from_order(cls, order: int, stripe_unit: int = 0, stripe_count: int = 0) -> "Layout":
        """Layout for ``2**order``-byte objects; ``0`` stripe params mean the default."""
        object_size = 1 << order
        if not stripe_unit or not stripe_count:
            return cls(object_size, object_size, 1)
        return cls(object_size, stripe_unit, stripe_count)

    @property
    def is_default(self) -> bool:
        """True when the layout needs no STRIPINGV2 feature."""
        return self.stripe_unit == self.object_size and self.stripe_count == 1


def validate_layout(object_size: int, stripe_unit: int, stripe_count: int) -> None:
    if stripe_unit <= 0 or stripe_count <= 0 or object_size <= 0:
        raise InvalidArgumentError(
            f"invalid layout: object_size={object_size} stripe_unit={stripe_unit} "
            f"stripe_count={stripe_count}"
        )
    if object_size % stripe_unit:
        raise InvalidArgumentError(
            f"stripe unit {stripe_unit} is not a factor of the object size {object_size}"
        )


def calc_object_mapping(layout: Layout, off: int, length: int) -> tuple[int, int, int]:
    """Map the file offset ``off`` to ``(objectno, object_offset, xlen)``.

    ``xlen`` is how many of the ``length`` bytes fit before the end of the stripe
    unit containing ``off`` (``ceph_calc_file_object_mapping``).
    """
    su = layout.stripe_unit
    sc = layout.stripe_count
    stripes_per_object = layout.object_size // su
    blockno, blockoff = divmod(off, su)  # which stripe unit in the file
    stripeno, stripepos = divmod(blockno, sc)  # which stripe; which object in the set
    objsetno, objsetpos = divmod(stripeno, stripes_per_object)
    objectno = objsetno * sc + stripepos
    obj_off = objsetpos * su + blockoff
    return objectno, obj_off, min(length, su - blockoff)


def file_to_extents(
    offset: int, length: int, object_size: int, stripe_unit: int, stripe_count: int
) -> list[ObjectExtent]:
    """Map the file range ``[offset, offset+length)`` to per-object extents.

    Returns extents sorted by ``(objectno, offset)``; stripe units that follow each
    other inside one object are merged (as ``ceph_file_to_extents`` does).  Every
    byte of the range appears in exactly one ``buffer_extents`` piece.  Raises
    :class:`InvalidArgumentError` for a bad layout or negative offset/length.
    """
    return layout_to_extents(Layout(object_size, stripe_unit, stripe_count), offset, length)


def layout_to_extents(layout: Layout, offset: int, length: int) -> list[ObjectExtent]:
    """:func:`file_to_extents` with a prebuilt :class:`Layout`."""
    if offset < 0 or length < 0:
        raise InvalidArgumentError(f"invalid extent {offset}~{length}")
    if length == 0:
        return []
    # Fast path: default layout, each object covered once in ascending order.
    if layout.stripe_count == 1:
        osz = layout.object_size
        out: list[ObjectExtent] = []
        pos, end, boff = offset, offset + length, 0
        while pos < end:
            objectno, obj_off = divmod(pos, osz)
            n = min(osz - obj_off, end - pos)
            out.append(ObjectExtent(objectno, obj_off, n, [(boff, n)]))
            pos += n
            boff += n
        return out

    last: dict[int, ObjectExtent] = {}  # objectno -> its last (highest) extent
    per_object: dict[int, list[ObjectExtent]] = {}
    pos, remaining, boff = offset, length, 0
    while remaining:
        objectno, obj_off, xlen = calc_object_mapping(layout, pos, remaining)
        ex = last.get(objectno)
        if ex is not None and ex.offset + ex.length == obj_off:
            # Next stripe unit of the same object: grow it; the buffer piece is
            # never adjacent (the units between went to the other objects).
            ex.length += xlen
            ex.buffer_extents.append((boff, xlen))
        else:
            ex = ObjectExtent(objectno, obj_off, xlen, [(boff, xlen)])
            last[objectno] = ex
            per_object.setdefault(objectno, []).append(ex)
        pos += xlen
        boff += xlen
        remaining -= xlen
    return [ex for objectno in sorted(per_object) for ex in per_object[objectno]]


def extent_to_file(layout: Layout, objectno: int, obj_off: int, obj_len: int) -> list[tuple[int, int]]:
    """Reverse map an object range to sorted ``(file_offset, length)`` pieces.

    ``ceph_extent_to_file`` in ``net/ceph/striper.c`` / ``Striper::extent_to_file``.
    """
    if objectno < 0 or obj_off < 0 or obj_len < 0:
        raise InvalidArgumentError(f"invalid object extent {objectno}:{obj_off}~{obj_len}")
    su = layout.stripe_unit
    sc = layout.stripe_count
    stripes_per_object = layout.object_size // su
    out: list[tuple[int, int]] = []
    blockoff = obj_off % su
    objsetno, stripepos = divmod(objectno, sc)
    while obj_len:
        stripeno = obj_off // su + objsetno * stripes_per_object
        blockno = stripeno * sc + stripepos
        off = blockno * su + blockoff
        n = min(obj_len, su - blockoff)
        out.append((off, n))
        blockoff = 0
        obj_off += n
        obj_len -= n
    return out


def get_num_objects(layout: Layout, size: int) -> int:
    """Number of data objects an image of ``size`` bytes can touch.

    ``Striper::get_num_objects`` / the kernel's ``ceph_get_num_objects``: whole
    object sets, less the objects of a partial last stripe that receive no data.
    """
    if size < 0:
        raise InvalidArgumentError(f"invalid size {size}")
    period = layout.stripe_count * layout.object_size
    num_periods = -(-size // period)
    remainder_bytes = size % period
    remainder_objs = 0
    if 0 < remainder_bytes < layout.stripe_count * layout.stripe_unit:
        remainder_objs = layout.stripe_count - (-(-remainder_bytes // layout.stripe_unit))
    return num_periods * layout.stripe_count - remainder_objs
