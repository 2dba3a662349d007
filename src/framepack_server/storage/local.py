"""Storage in a folder on this machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from framepack_server.storage.base import validate_key

__all__ = ["LocalStorage"]

_TEMP_PREFIX = ".tmp-"


class LocalStorage:
    """Objects as files under ``root``; ``outputs/a.mp4`` is ``root/outputs/a.mp4``.

    Every write goes to a temporary file in the destination folder, is flushed to disk and
    then renamed over the final name with :func:`os.replace`, so readers never see a partial
    object. ``content_type`` is accepted for interface parity and not stored: a server infers
    it from the file name.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        # A symlink inside the root could still point outside it.
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write ``data`` under ``key`` atomically."""
        with self._atomic_writer(self._path(key)) as out:
            out.write(data)

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        """Copy the finished file ``path`` in atomically; ``path`` itself is left in place."""
        with open(path, "rb") as src, self._atomic_writer(self._path(key)) as out:
            shutil.copyfileobj(src, out, length=1024 * 1024)

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; :class:`FileNotFoundError` if missing."""
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        """Whether a file is stored under ``key``."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the object, and the folders it leaves empty (as S3 has no empty "folders"); a
        missing object is fine."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == self.root or not folder.is_relative_to(self.root):
                break
            try:
                folder.rmdir()  # only if empty; a concurrent writer's folder is left alone
            except OSError:
                break

    def local_path(self, key: str) -> Path:
        """The file's path under the root (it may not exist yet)."""
        return self._path(key)

    def size(self, key: str) -> int | None:
        """Size in bytes, or ``None`` if missing."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    @staticmethod
    @contextlib.contextmanager
    def _atomic_writer(dest: Path) -> Iterator[BinaryIO]:
        """Yield a temporary file beside ``dest``; on success it replaces ``dest``, on error it is removed."""
        for attempt in range(3):  # a delete may prune the folder between mkdir and mkstemp: again
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=dest.parent)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; objects are meant to be served
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
