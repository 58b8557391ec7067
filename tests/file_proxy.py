"""A file object whose `write` a test overrides; everything else is the real file's.

Used in-process (test_atomic's WatchedFile) and in the child scripts of the SIGKILL tests, which
import it with tests/ on their PYTHONPATH. It opens through builtins.open, so it still reaches the
real file where a test has replaced a module's `open` with a subclass of it.
"""

from __future__ import annotations

import builtins


class FileProxy:
    def __init__(self, *args):
        self.f = builtins.open(*args)  # noqa: SIM115 - closed in __exit__

    def write(self, data):
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
