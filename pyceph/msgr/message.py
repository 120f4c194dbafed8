"""The messenger's unit of exchange: a Ceph message (``ceph_msg`` in the kernel).

A message is a type number plus three payload sections (front, middle, data) and a few
header fields.  Message classes (``pyceph.mon.messages``, ``pyceph.osd.messages``)
encode their fields into ``front``/``data`` and decode them back; the messenger frames
the sections on the wire (``src/msg/Message.h``, ``include/linux/ceph/msgr.h``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Priorities (CEPH_MSG_PRIO_*)
PRIO_LOW = 64
PRIO_DEFAULT = 127
PRIO_HIGH = 196
PRIO_HIGHEST = 255


@dataclass
class Message:
    """One Ceph message.

    - ``type``: CEPH_MSG_* number (e.g. 42 = MOSDOp).
    - ``front``/``middle``/``data``: payload sections, bytes.
    - ``version``/``compat_version``: the message encoding's HEAD/COMPAT version.
    - ``tid``: transaction id (OSD ops, mon commands); ``seq`` is set by the messenger.
    """

    type: int
    front: bytes = b""
    middle: bytes = b""
    data: bytes = b""
    version: int = 1
    compat_version: int = 1
    priority: int = PRIO_DEFAULT
    tid: int = 0
    seq: int = 0
    ack_seq: int = 0
    src_type: int = 0
    src_num: int = 0
    data_off: int = 0
    flags: int = 0
