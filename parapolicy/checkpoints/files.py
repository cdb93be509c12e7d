"""Which files of an untrusted checkpoint may be opened: regular files inside it, nothing else.

A FIFO named like a statistics file blocks ``open`` forever, a device file reads without end,
and a symlink can point anywhere on the machine. So every file is checked with ``lstat`` and
``realpath`` before it is opened: it must be a regular file whose real path lies inside the
checkpoint directory (or, for a Hub snapshot, inside the cache's ``blobs`` folder, whose
files named by a sha256 must hash to their name). Files are opened with ``O_NONBLOCK`` and
checked again on the open descriptor, so a file swapped after the check is refused too.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat

from parapolicy.errors import CheckpointError

_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_regular(path: str, shown: str) -> os.stat_result:
    """``stat`` of ``path`` (symlinks followed), refusing anything but a regular file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {shown}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{shown} is {_kind(info.st_mode)}; expected a regular file")
    return info


def open_regular(path: str, shown: str | None = None):
    """A binary file object for the regular file at ``path``; special files are refused unopened."""
    shown = shown or repr(path)
    check_regular(path, shown)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise CheckpointError(f"cannot open {shown}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the check and the open
        os.close(fd)
        raise CheckpointError(f"{shown} is not a regular file; expected one")
    return os.fdopen(fd, "rb")


class CheckpointDir:
    """The files of one checkpoint directory, handed out only after the checks above.

    ``blobs``: a second folder the directory's symlinks may lead into (a Hub cache's blobs).
    """

    def __init__(self, path: str, blobs: str | None = None):
        self.path = os.fspath(path)
        self.roots = [os.path.realpath(self.path)] + ([os.path.realpath(blobs)] if blobs else [])
        self.blobs = os.path.realpath(blobs) if blobs else None
        self._verified: set = set()

    def has(self, name: str) -> bool:
        """Whether ``name`` exists in the directory at all (a special file or dangling link counts)."""
        return os.path.lexists(os.path.join(self.path, name))

    def file(self, name: str) -> str | None:
        """The real path of regular file ``name`` inside the checkpoint, or None when absent."""
        full = os.path.join(self.path, name)
        if not os.path.lexists(full):
            return None
        real = os.path.realpath(full)
        if not any(_inside(real, root) for root in self.roots):
            where = "the checkpoint directory" + (" or the Hub cache's blobs" if self.blobs else "")
            raise CheckpointError(f"{name!r} in {self.path!r} is a symlink to {real!r}, outside {where}; "
                                  "expected a file inside it")
        check_regular(real, repr(name))
        if self.blobs and _inside(real, self.blobs) and _SHA256_NAME.fullmatch(os.path.basename(real)):
            self._check_blob(real, name)
        return real

    def shown(self, name: str) -> str:
        """``folder/name``: how messages name a file of the checkpoint."""
        return os.path.join(os.path.basename(os.path.normpath(self.path)), name)

    def glob(self, pattern: str) -> list[str]:
        """Real paths of the files whose names match ``pattern``, sorted by name."""
        try:
            names = sorted(fnmatch.filter(os.listdir(self.path), pattern))
        except OSError as exc:
            raise CheckpointError(f"cannot list {self.path!r}: {exc.strerror or type(exc).__name__}") from None
        return [self.file(name) for name in names]

    def read_bytes(self, name: str, limit: int) -> bytes | None:
        """The contents of regular file ``name`` (at most ``limit`` bytes), or None when absent."""
        real = self.file(name)
        if real is None:
            return None
        with open_regular(real, repr(name)) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise CheckpointError(f"{name!r}: expected at most {limit} bytes, found more")
        return data

    def _check_blob(self, real: str, name: str) -> None:
        """A cache blob named by a sha256 must hash to its name (a damaged or planted blob is refused)."""
        if real in self._verified:
            return
        digest = hashlib.sha256()
        with open_regular(real, repr(name)) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != os.path.basename(real):
            raise CheckpointError(f"{name!r}: the Hub cache names its blob by sha256 {os.path.basename(real)[:12]}..., "
                                  f"but its contents hash to {digest.hexdigest()[:12]}... (damaged or altered cache)")
        self._verified.add(real)
