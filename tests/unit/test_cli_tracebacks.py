"""Issue 9: inputs that gave tracebacks give one clear line and a non-zero exit, as
``rbd`` does (messages and exit codes are what Pacific's ``rbd`` prints for the same
arguments).  No cluster: every case is refused before connecting."""

from __future__ import annotations

import asyncio
import errno

import pytest

from pyceph import errors
from pyceph.block.daemon import spec_file_label, spec_label
from pyceph.cli import prbd
from pyceph.cli.common import parse_image_spec
from pyceph.rbd.image import AsyncRBD

CONF = ["-c", "/nonexistent/ceph.conf"]


def run(capsys, *argv) -> tuple[int, list[str]]:
    rc = prbd.main([*CONF, *argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


@pytest.mark.parametrize("argv,rc,line", [
    (["create", "--size", "99999999999T", "img"], 1, "prbd: the argument for option '--size' is invalid"),
    (["create", "--size", "16E", "img"], 1, "prbd: the argument for option '--size' is invalid"),
    (["create", "--size", "-1", "img"], 1, "prbd: the argument for option '--size' is invalid"),
    (["create", "--size", "\udcff", "img"], 1, "prbd: the argument for option '--size' is invalid"),
    (["resize", "--size", "99999999999T", "img"], 1, "prbd: the argument for option '--size' is invalid"),
    (["bench", "--io-type", "write", "--io-size", "0", "img"], errno.EINVAL,
     "prbd: --io-size should be greater than zero."),
    (["bench", "--io-type", "write", "--io-size", "-1", "img"], 1,
     "prbd: the argument for option '--io-size' is invalid"),
    (["bench", "--io-type", "write", "--io-total", "-1", "img"], 1,
     "prbd: the argument for option '--io-total' is invalid"),
    (["bench", "--io-type", "write", "--io-threads", "0", "img"], errno.EINVAL,
     "prbd: --io-threads should be greater than zero."),
    (["bench", "--io-type", "write", "--io-threads", "-3", "img"], errno.EINVAL,
     "prbd: --io-threads should be greater than zero."),
    (["bench", "--io-type", "write", "--io-threads", "99999999999999999999", "img"], errno.EINVAL,
     f"prbd: --io-threads should be at most {prbd.MAX_BENCH_THREADS}."),
    (["create", "--size", "1M", "/img"], errno.EINVAL, "prbd: invalid image spec: '/img'"),
    (["create", "--size", "1M", "rbd//img"], errno.EINVAL, "prbd: invalid image spec: 'rbd//img'"),
    (["create", "--size", "1M", "a/b/c/d"], errno.EINVAL, "prbd: invalid image spec: 'a/b/c/d'"),
    (["create", "--size", "1M", ""], errno.EINVAL, "prbd: image name was not specified"),
    (["map", "rbd/"], errno.EINVAL, "prbd: image name was not specified"),
])
def test_bad_input_is_one_line(capsys, argv, rc, line):
    got_rc, err = run(capsys, *argv)
    assert (got_rc, err) == (rc, [line])


def test_image_spec_components():
    assert parse_image_spec("p/ns/img@s") == parse_image_spec(None, "p", "ns", "img", "s")
    assert parse_image_spec("img").pool == "rbd"
    for bad in ("/img", "rbd//img", "/ns/img", "a/b/c/d"):
        with pytest.raises(errors.InvalidArgumentError, match="invalid image spec"):
            parse_image_spec(bad)


def test_file_label_of_a_long_name_fits_a_file_name():
    """``prbd map`` of a 300-character image name made the log file and mountpoint names
    exceed NAME_MAX (a traceback); long labels are cut and keep a hash of the whole."""
    short = {"pool": "rbd", "namespace": "", "name": "img", "snap": "s1"}
    assert spec_file_label(short) == "rbd.img@s1"
    long_a = {"pool": "rbd", "namespace": "ns", "name": "l" * 300, "snap": "-"}
    long_b = {**long_a, "name": "l" * 299 + "m"}
    la, lb = spec_file_label(long_a), spec_file_label(long_b)
    assert len(la) == len(lb) == 100 and la != lb
    assert la.startswith("rbd.ns.lll") and "~" in la
    odd = {"pool": "rbd", "namespace": "", "name": "\udcff/" * 200, "snap": "-"}
    assert len(spec_file_label(odd)) == 100 and "/" not in spec_file_label(odd)
    assert spec_label(long_a) == "rbd/ns/" + "l" * 300  # the name itself stays whole


class NoIO:
    """An ioctx that fails the test if create() reaches the OSDs."""

    def __getattr__(self, name):
        raise AssertionError(f"ioctx.{name} used: the bad argument was not refused first")


@pytest.mark.parametrize("kw,match", [
    ({"size": 1 << 64}, "invalid image size"),
    ({"size": 1 << 60}, "not compatible with object map"),  # 2^38 objects of 4 MiB
    ({"size": 1 << 20, "stripe_unit": 4096, "stripe_count": 1 << 64}, "out of range"),
])
def test_rbd_create_refuses_before_writing(kw, match):
    size = kw.pop("size")
    with pytest.raises(errors.InvalidArgumentError, match=match):
        asyncio.run(AsyncRBD().create(NoIO(), "img", size, **kw))


def test_rbd_create_big_image_without_object_map_passes_the_checks():
    """Without the object map, 8 EiB is a valid size (rbd creates it): the check is specific."""
    with pytest.raises(AssertionError, match="ioctx"):
        asyncio.run(AsyncRBD().create(NoIO(), "img", 1 << 63, features=1))  # layering only
