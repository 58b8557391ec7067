"""Atomic file output: readers never see a half-written artifact, even after SIGKILL."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from wae_deploy.core.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def check_writable(final: str | os.PathLike, kind: str | None = None) -> None:
    """Fail before any work is done when the output cannot be written.

    kind "file": `final` must not be an existing folder; kind "dir" (an artifact folder): an
    existing `final` is replaced only when it is itself an artifact (see check_replaceable).
    """
    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output folder is not writable: {parent}")
    try:  # os.access says yes to root everywhere, /proc and read-only mounts included: try it
        fd, probe = tempfile.mkstemp(prefix=".wae-deploy.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"output folder is not writable: {parent} ({e.strerror or e})") from e
    if kind == "file" and final.is_dir() and not final.is_symlink():
        raise UserError(f"output path is a folder, not a file: {final}")
    if kind == "dir":
        check_replaceable(final)


ARTIFACT_MARKER = "manifest.json"


def check_replaceable(final: str | os.PathLike) -> None:
    """An existing output folder is replaced only when it is a wae-deploy artifact or empty.

    `-o .` or `-o models` must never swap away (and delete) a folder of the user's files; a
    symbolic link is replaced itself, never what it points to.
    """
    final = Path(final)
    for _ in range(20):  # a concurrent builder may swap `final` while we look: look again
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            return
        if not stat.S_ISDIR(st.st_mode):
            raise UserError(f"refusing to replace {final}: it is a file, not an artifact folder; choose another -o")
        try:
            fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone or replaced between the two calls
        try:
            names = os.listdir(fd) if os.fstat(fd).st_ino == st.st_ino else None
        finally:
            os.close(fd)
        if names is None:
            continue
        if not names or ARTIFACT_MARKER in names:
            return
        try:
            if os.lstat(final).st_ino != st.st_ino:
                continue  # it was being swapped out (and emptied) while we listed it
        except FileNotFoundError:
            return
        break
    raise UserError(f"refusing to replace {final}: it is a folder that is not a wae-deploy artifact "
                    f"(no {ARTIFACT_MARKER}); choose another -o")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `final`; rename it onto `final` only on success.

    The temporary name starts with '.' and ends in '.partial' so that nothing globbing
    for artifacts picks it up, and a crash leaves only an obviously-unfinished file.
    """
    final = Path(final)
    check_writable(final, "file")
    parent = final.parent if str(final.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".partial", dir=parent)
    except OSError as e:
        raise UserError(f"cannot write {final}: {e.strerror or e}") from e
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
    check_writable(final, "dir")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    except OSError as e:
        raise UserError(f"cannot write {final}: {e.strerror or e}") from e
    try:
        yield tmp
        check_replaceable(final)  # another process may have put something else there meanwhile
        _swap_in(tmp, final, parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write {final}: {e.strerror or e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, final: Path, parent: Path, attempts: int = 100) -> None:
    """Rename the finished folder onto `final`, moving an existing `final` aside first.

    Safe against a concurrent builder of the same artifact: whoever moves the old folder
    away, each rename puts a complete folder in place, and a rename that finds a folder
    (the other builder's) already there moves it aside and tries again.
    """
    for _ in range(attempts):
        try:
            os.replace(tmp, final)  # onto nothing (or an empty folder)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=parent))
        try:
            os.replace(final, old / "x")
        except FileNotFoundError:
            pass  # the other builder moved it first
        finally:
            shutil.rmtree(old, ignore_errors=True)
    raise OSError(errno.EBUSY, f"{final} keeps being replaced by another process")
