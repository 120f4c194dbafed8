"""Typed errors carrying an errno, shaped like python-rados' hierarchy.

Every error pyceph raises derives from :class:`Error`; each has ``.errno`` (a positive
errno number from :mod:`errno`, or ``None`` where no errno applies).  Names follow
python-rados/python-rbd (``ObjectNotFound``, ``PermissionError``, ``ImageNotFound`` ...)
so that code written against those modules can catch ours.
"""

from __future__ import annotations

import errno as _errno


class Error(Exception):
    """Base of every pyceph error.  ``errno`` is positive (e.g. ``errno.ENOENT``)."""

    errno: int | None = None

    def __init__(self, message: str = "", errno: int | None = None):
        super().__init__(message)
        if errno is not None:
            self.errno = errno
        self.message = message

    def __str__(self) -> str:
        msg = self.message or self.__class__.__name__
        if self.errno:
            return f"[errno {self.errno}] {msg}"
        return msg


class OSError(Error):  # noqa: A001 - python-rados has rados.OSError too
    """An error that maps to an errno returned by the cluster or the OS."""

    errno = _errno.EIO


class InterruptedOrTimeoutError(OSError):
    errno = _errno.EINTR


class ObjectNotFound(OSError):
    errno = _errno.ENOENT


class PermissionError(OSError):  # noqa: A001
    errno = _errno.EPERM


class PermissionDeniedError(OSError):
    errno = _errno.EACCES


class ObjectExists(OSError):
    errno = _errno.EEXIST


class ObjectBusy(OSError):
    errno = _errno.EBUSY


class InvalidArgumentError(OSError):
    errno = _errno.EINVAL


class NoSpace(OSError):
    errno = _errno.ENOSPC


class NoData(OSError):
    errno = _errno.ENODATA


class TimedOut(OSError):
    errno = _errno.ETIMEDOUT


class IOError(OSError):  # noqa: A001
    errno = _errno.EIO


class ConnectionShutdown(OSError):
    errno = _errno.ESHUTDOWN


class NotConnected(OSError):
    errno = _errno.ENOTCONN


class OutOfRange(OSError):
    errno = _errno.ERANGE


class FunctionNotSupported(OSError):
    errno = _errno.EOPNOTSUPP


class ReadOnly(OSError):
    errno = _errno.EROFS


class Blocklisted(OSError):
    """The cluster blocklisted this client (ESHUTDOWN/EBLOCKLISTED in Ceph)."""

    errno = 108  # EBLOCKLISTED == ESHUTDOWN in Ceph's errno.h


# --- configuration / usage ------------------------------------------------


class ConfigError(InvalidArgumentError):
    """ceph.conf, keyring or command-line input is missing or malformed."""


# --- authentication -------------------------------------------------------


class AuthError(PermissionDeniedError):
    """cephx failed: wrong or missing key, or the monitor refused the entity."""


# --- wire protocol ----------------------------------------------------------


class ProtocolError(OSError):
    """A peer sent bytes that do not parse: bad banner, frame, CRC or encoding."""

    errno = _errno.EBADMSG


class DecodeError(ProtocolError):
    """An encoded Ceph structure is truncated or malformed."""


class MonitorUnreachable(TimedOut):
    """No monitor answered within the timeout.  ``addrs`` lists what was tried."""

    def __init__(self, message: str = "", addrs: list[str] | None = None):
        super().__init__(message)
        self.addrs = addrs or []


# --- RBD ------------------------------------------------------------------


class ImageNotFound(ObjectNotFound):
    pass


class ImageExists(ObjectExists):
    pass


class ImageBusy(ObjectBusy):
    pass


class ImageHasSnapshots(ObjectBusy):
    errno = _errno.ENOTEMPTY


class ReadOnlyImage(ReadOnly):
    pass


class FeatureNotSupported(FunctionNotSupported):
    """The image has features pyceph cannot honour for this kind of access."""

    errno = _errno.ENXIO


class PoolNotFound(ObjectNotFound):
    pass


_BY_ERRNO: dict[int, type[OSError]] = {
    _errno.ENOENT: ObjectNotFound,
    _errno.EPERM: PermissionError,
    _errno.EACCES: PermissionDeniedError,
    _errno.EEXIST: ObjectExists,
    _errno.EBUSY: ObjectBusy,
    _errno.EINVAL: InvalidArgumentError,
    _errno.ENOSPC: NoSpace,
    _errno.EDQUOT: NoSpace,
    _errno.ENODATA: NoData,
    _errno.ETIMEDOUT: TimedOut,
    _errno.EIO: IOError,
    _errno.ESHUTDOWN: Blocklisted,
    _errno.ENOTCONN: NotConnected,
    _errno.ERANGE: OutOfRange,
    _errno.EOPNOTSUPP: FunctionNotSupported,
    _errno.EROFS: ReadOnly,
    _errno.EINTR: InterruptedOrTimeoutError,
    _errno.EBADMSG: ProtocolError,
}


def make_ex(ret: int, msg: str) -> OSError:
    """Build the typed error for a Ceph return code ``ret`` (negative or positive errno)."""
    err = abs(ret)
    cls = _BY_ERRNO.get(err, OSError)
    ex = cls(f"{msg}: {_errno.errorcode.get(err, err)}", errno=err)
    return ex
