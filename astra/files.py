"""Atomic file writes: a file is either its old self or its complete new self, never half-written.

And the check that an output path can be written, made before any work and creating nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _read_umask() -> int:
    # os.umask can only be read by setting it: done once, at import, not while other threads write.
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a temporary file beside ``path``; on success it is synced and renamed over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file private (0600); give it the mode a plain open() would (0666 less the umask).
    os.fchmod(handle, 0o666 & ~_UMASK)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Make ``target`` the same file as ``source``: a hard link where the filesystem allows
    (checkpoints are large), else a copy. An existing ``target`` is replaced."""
    target = Path(target)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names it and says why."""


def check_output_folder(path: str | Path, option: str = "--out") -> None:
    """Refuse, creating nothing, an output folder that is a file, lies under a file or cannot be written.

    The nearest folder that exists (``path`` itself, or the one it would be created in) must
    take a file: it is probed with a temporary file that leaves no entry behind.
    """
    path = Path(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputPathError(f"{option} {path}: is a file, not a folder")
    _check_nearest_folder(path, option, (path, *path.parents))


def check_output_file(path: str | Path, option: str = "--out") -> None:
    """Refuse, creating nothing, an output file that is a folder, lies under a file or cannot be written."""
    path = Path(path)
    if os.path.isdir(path):
        raise OutputPathError(f"{option} {path}: is a folder, not a file")
    _check_nearest_folder(path, option, path.parents)


def _check_nearest_folder(path: Path, option: str, candidates: Iterable[Path]) -> None:
    existing = next((p for p in candidates if os.path.lexists(p)), Path.cwd())
    if not os.path.isdir(existing):
        raise OutputPathError(f"{option} {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        where = "there" if existing == path else f"in {existing}"
        raise OutputPathError(f"{option} {path}: cannot write {where} ({error.strerror or error})") from None
