"""pyceph: a pure-Python Ceph client (msgr2, cephx, OSDMap/CRUSH, RADOS, RBD, block mapping)."""
__version__ = "0.1.0"
