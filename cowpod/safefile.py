"""Writing files into directories someone else can write to.

`<data-dir>/run/` is mounted read-write into every VM (`/run/cowpod/`): root in
any VM can create, replace or symlink names there, while the controller and
`cowpod up` on the host keep writing the join bundle and the join token into
it. A plain `open(tmp, "w")` follows a symlink a VM planted at the temporary
name (or at the final name) and writes — or truncates — whatever host file it
points at, with the host process's rights. `write_atomic` never follows a
link: a fresh, unpredictable temporary name opened with
`O_CREAT | O_EXCL | O_NOFOLLOW` relative to the directory, then `rename()`,
which replaces a symlink at the final name instead of writing through it.
Readers see the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets


def write_atomic(path: pathlib.Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` (permissions `mode`) without following any link at `path`."""
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tmp = f".{path.name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, mode, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)  # not the umask's idea of it
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)
