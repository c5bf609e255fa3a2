"""A store on a filesystem that really hangs: a FUSE passthrough of a directory whose every call blocks while a
switch file exists, the way a hard NFS mount blocks while its server does not answer (the caller sleeps in the
kernel; no error, no timeout).

    python -m tests.service.hanging_store BACKING MOUNTPOINT SWITCH

runs in the foreground until unmounted (``fusermount -u MOUNTPOINT``). It is its own process so that the calls it
blocks never hold the test process's interpreter.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path
from typing import Any

import mfusepy as fuse


class HangingPassthrough(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, backing: Path, switch: Path) -> None:
        self.backing, self.switch = backing, switch

    def _real(self, path: str) -> str:
        """The backing path of ``path``, once the switch is off: every call passes here first."""
        while self.switch.exists():  # the server stopped answering
            time.sleep(0.05)
        return str(self.backing) + path

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        path = self._real(path)
        st = os.lstat(path)
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid")
        return {key: getattr(st, key) for key in keys} | {"st_mtime_ns": st.st_mtime_ns}

    def readdir(self, path: str, fh: int) -> list[str]:
        path = self._real(path)
        return [".", "..", *os.listdir(path)]

    def open(self, path: str, flags: int) -> int:
        path = self._real(path)
        return os.open(path, flags)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        path = self._real(path)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        path = self._real(path)
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        path = self._real(path)
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        path = self._real(path)
        os.truncate(path, length)

    def release(self, path: str, fh: int) -> None:
        path = self._real(path)
        os.close(fh)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        path = self._real(path)
        os.fsync(fh)

    def flush(self, path: str, fh: int) -> None:
        path = self._real(path)
        return None

    def mkdir(self, path: str, mode: int) -> None:
        path = self._real(path)
        os.mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        path = self._real(path)
        os.rmdir(path)

    def unlink(self, path: str) -> None:
        path = self._real(path)
        os.unlink(path)

    def rename(self, old: str, new: str) -> None:
        old = self._real(old)
        os.rename(old, self._real(new))

    def chmod(self, path: str, mode: int) -> None:
        path = self._real(path)
        os.chmod(path, mode)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        path = self._real(path)
        os.utime(path, ns=times)

    def access(self, path: str, amode: int) -> None:
        path = self._real(path)
        if not os.access(path, amode):
            raise fuse.FuseOSError(errno.EACCES)

    def statfs(self, path: str) -> dict[str, int]:
        path = self._real(path)
        st = os.statvfs(path)
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_frsize")
        return {key: getattr(st, key) for key in keys} | {"f_namemax": st.f_namemax}


def main() -> None:
    backing, mountpoint, switch = (Path(arg) for arg in sys.argv[1:4])
    # Kernel caches off: every call reaches this process, as every call of a hung NFS client reaches the wire.
    fuse.FUSE(
        HangingPassthrough(backing.resolve(), switch),
        str(mountpoint),
        foreground=True,
        nothreads=False,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
    )


if __name__ == "__main__":
    main()
