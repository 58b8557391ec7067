"""Atomic file output: readers never see a half-written artifact, even after SIGKILL."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def check_writable(final: str | os.PathLike) -> None:
    """Fail before any work is done when the output cannot be written."""
    parent = Path(final).parent if str(Path(final).parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output folder is not writable: {parent}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `final`; rename it onto `final` only on success.

    The temporary name starts with '.' and ends in '.partial' so that nothing globbing
    for artifacts picks it up, and a crash leaves only an obviously-unfinished file.
    """
    final = Path(final)
    check_writable(final)
    parent = final.parent if str(final.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".partial", dir=parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; outputs get the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UserError(f"cannot write {final}: {e.strerror or e}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(final: str | os.PathLike, text: str) -> None:
    write_bytes(final, text.encode())


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a temporary folder beside `final`; it replaces `final` only when the block succeeds.

    Multi-file artifacts (an OpenVINO .xml/.bin pair, a model plus its manifest) appear
    all together or not at all. A concurrent builder of the same artifact loses the race
    harmlessly: each rename swaps in a complete folder.
    """
    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    check_writable(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=parent))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
