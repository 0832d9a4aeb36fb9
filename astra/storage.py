"""Experiment folders on object storage (``s3://``, ``gs://``, ...): a local copy kept in step.

Everything the platform writes is a local file first: atomic renames, SQLite, memory-mapped
arrays and TensorBoard need a file system. An experiment on object storage is therefore worked
on in a local copy (:func:`local_copy_of`, under ``$ASTRA_CACHE/experiments/``) that each
process brings up to date from the storage before it starts (:meth:`Mirror.pull`) and copies
to the storage as it goes (:meth:`Mirror.push`): the search's driver the whole folder (after each
trial and at the end), each trial its own ``trials/<id>/`` folder (after each epoch and when it
finishes), so that a trial restarted on another node resumes from its last epoch, and a search
started on a new machine resumes from the storage alone. A dataset on object storage is copied
the same way, once per machine, into ``$ASTRA_CACHE/data/`` (features are memory-mapped: they
must be on a disk), by the driver and by each trial on its node.

File systems come from ``pyarrow.fs.FileSystem.from_uri``: credentials from the environment or
the instance role, never from a file of this project; query parameters of the URI
(``?endpoint_override=host:port&scheme=http`` for an S3-compatible server) are passed on.

A file is in step when the two copies have the same size and modification time: after each
copy the local file takes the stored one's time, so that a later change on either side is the
newer one and travels; nothing is deleted on either side.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


class StorageError(ValueError):
    """Storage that cannot be used; the message names the location and what is wrong."""


def is_remote(location: str | os.PathLike[str] | None) -> bool:
    """Whether ``location`` names object storage (``s3://...``) rather than a local or NFS path."""
    if location is None:
        return False
    scheme = urlsplit(str(location)).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        return True
    if "://" in str(location) and scheme not in ("file", ""):
        raise StorageError(
            f"{location}: storage of kind {scheme!r} is not supported; use a path, or one of "
            + ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
        )
    return False


def local_copy_of(uri: str, kind: str = "experiments") -> Path:
    """The local working copy of ``uri``: ``$ASTRA_CACHE/<kind>/<bucket and path>-<hash>``."""
    parts = urlsplit(uri)
    root = Path(
        os.environ.get("ASTRA_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "astra"
    )
    name = f"{parts.netloc}{parts.path}".strip("/").replace("/", "_") or "root"
    digest = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:8]
    return root / kind / f"{parts.scheme}_{name}-{digest}"


@dataclass(frozen=True)
class Mirror:
    """A folder on object storage (``uri``) and its local working copy (``local``)."""

    uri: str
    local: Path

    @classmethod
    def of(cls, uri: str, local: str | Path | None = None, *, kind: str = "experiments") -> Mirror:
        uri = uri.rstrip("/")
        return cls(uri, Path(local) if local is not None else local_copy_of(uri, kind))

    def remote(self, sub: str = "") -> str:
        """The URI of ``sub`` (a path relative to the folder), query parameters kept."""
        parts = urlsplit(self.uri)
        path = parts.path.rstrip("/") + (f"/{sub.strip('/')}" if sub else "")
        return parts._replace(path=path).geturl()

    def pull(self, sub: str = "") -> int:
        """Copy what the storage holds under ``sub`` and the local copy lacks or holds older; the
        number of files copied."""
        filesystem, base = self._filesystem()
        copied = 0
        for relative, info in self._remote_files(filesystem, base, sub):
            target = self.local / relative
            if target.is_file() and _in_step(target, info) is not False:
                continue  # the same, or newer here (pushed later)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.getpid()}.pull.tmp")  # one per process
            with filesystem.open_input_stream(info.path) as source, open(temporary, "wb") as sink:
                _copy_stream(source, sink)
            os.replace(temporary, target)
            _take_time(target, info)
            copied += 1
        if copied:
            log.info("%s: %d file(s) brought from %s", self.local / sub, copied, self.remote(sub))
        return copied

    def push(self, sub: str = "") -> int:
        """Copy what the local copy holds under ``sub`` and the storage lacks or holds older (temporary
        files of atomic writes aside); the number of files copied."""
        folder = self.local / sub
        if not folder.exists():
            return 0
        filesystem, base = self._filesystem()
        stored = dict(self._remote_files(filesystem, base, sub))
        copied = 0
        for path in _local_files(folder):
            relative = path.relative_to(self.local).as_posix()
            info = stored.get(relative)
            if info is not None and _in_step(path, info) is not True:
                continue  # the same, or newer there
            destination = f"{base}/{relative}"
            filesystem.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            with open(path, "rb") as source, filesystem.open_output_stream(destination) as sink:
                _copy_stream(source, sink)
            _take_time(path, filesystem.get_file_info(destination))
            copied += 1
        if copied:
            log.debug("%s: %d file(s) copied to %s", folder, copied, self.remote(sub))
        return copied

    def exists(self) -> bool:
        """Whether the storage holds anything under this folder."""
        filesystem, base = self._filesystem()
        return any(True for _ in self._remote_files(filesystem, base, ""))

    def _filesystem(self) -> tuple[Any, str]:
        import pyarrow.fs

        try:
            filesystem, base = pyarrow.fs.FileSystem.from_uri(self.uri)
        except (OSError, ValueError) as error:
            raise StorageError(f"{self.uri}: cannot open this storage ({error})") from None
        return filesystem, base.rstrip("/")

    def _remote_files(self, filesystem: Any, base: str, sub: str) -> Iterator[tuple[str, Any]]:
        import pyarrow.fs

        root = f"{base}/{sub.strip('/')}" if sub else base
        try:
            infos = filesystem.get_file_info(
                pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True)
            )
        except OSError as error:
            raise StorageError(f"{self.remote(sub)}: cannot list it ({error})") from None
        for info in infos:
            if info.type == pyarrow.fs.FileType.File:
                yield info.path[len(base) + 1 :], info


def _local_files(folder: Path) -> Iterator[Path]:
    if folder.is_file():
        yield folder
        return
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.endswith(".tmp"):
            yield path


def _in_step(path: Path, info: Any) -> bool | None:
    """None when both copies agree; True when the local one is newer (or differs at the same
    time); False when the stored one is newer."""
    stat = path.stat()
    stored = info.mtime_ns
    if stat.st_size == info.size and stored is not None and abs(stat.st_mtime_ns - stored) < 1_000_000:
        return None
    if stored is None:
        return True
    return stat.st_mtime_ns >= stored


def _take_time(path: Path, info: Any) -> None:
    if info.mtime_ns is not None:
        os.utime(path, ns=(info.mtime_ns, info.mtime_ns))


def _copy_stream(source: Any, sink: Any, chunk: int = 8 << 20) -> None:
    while True:
        block = source.read(chunk)
        if not block:
            return
        sink.write(block)
