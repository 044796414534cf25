"""Imported by the fork server of tests/_forkserver.py: warms it up once for every writer."""

from tests import _crash_child, _integrity_child  # noqa: F401  (the children's code, imported before the fork)
from tests._forkserver import _warm

_warm()
