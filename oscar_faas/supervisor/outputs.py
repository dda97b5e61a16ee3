"""The synchronous response: what goes to ``out`` once the script has run.

OSCAR's rule: exactly one file anywhere under ``TMP_OUTPUT_DIR`` gives its base64 (one line),
several give the base64 of a zip of them (entry names relative to the directory), none give the
script's merged output. Files are encoded while they are read, and the zip is written straight
into the base64 encoder (``zipfile`` supports unseekable streams), so no output is ever held in
memory or copied to disk whole.
"""

from __future__ import annotations

import binascii
import os
import shutil
import stat
import time
import zipfile
from pathlib import Path
from typing import BinaryIO

#: Bytes encoded per step; a multiple of 3 so no padding appears mid-stream.
ENCODE_CHUNK = 3 << 18


def list_output_files(output_dir: Path) -> list[str]:
    """Regular files under ``output_dir`` (recursive), as sorted '/'-separated relative names.

    Symbolic links are never followed nor listed (a link to ``/etc/passwd`` would otherwise
    come back in the answer and the uploads), nor are FIFOs, sockets and devices.
    """
    names = []
    for root, _dirs, files in os.walk(output_dir):  # does not descend into linked folders
        for name in files:
            full = Path(root, name)
            try:
                mode = os.lstat(full).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode):
                names.append(full.relative_to(output_dir).as_posix())
    return sorted(names)


def open_output(output_dir: Path, name: str) -> BinaryIO:
    """Open ``output_dir/name`` (a name from :func:`list_output_files`) for reading without
    following a symbolic link anywhere on the way: each folder is opened relative to its
    parent with ``O_NOFOLLOW``, so a file swapped for a link after listing is refused too.

    :raises OSError: a component is a link, or the file is gone or not a regular file.
    """
    parts = name.split("/")
    folder = os.open(output_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"output {name!r} is not a regular file")
    return os.fdopen(fd, "rb")


def entry_name(name: str) -> str:
    """The name an output gets in the zip and in object storage: relative, '/'-separated,
    valid UTF-8, no '.', '..' or empty parts, no backslash (a separator to Windows tools)
    and no control characters."""
    text = os.fsencode(name).decode("utf-8", "replace").replace("\\", "/")
    parts = ["".join(ch if ch.isprintable() else "_" for ch in part)
             for part in text.split("/") if part not in ("", ".", "..")]
    return "/".join(parts) or "output"


class Base64Writer:
    """Write-only stream that base64-encodes what it gets into ``out`` as one line.

    Holds fewer than :data:`ENCODE_CHUNK` + 3 bytes; call :meth:`close` to flush the tail.
    It has no ``tell``/``seek`` on purpose, so ``zipfile`` treats it as a pipe.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= ENCODE_CHUNK:
            cut = len(self._buffer) - len(self._buffer) % 3
            self._out.write(binascii.b2a_base64(self._buffer[:cut], newline=False))
            del self._buffer[:cut]
        return len(data)

    def flush(self) -> None:
        """Nothing to do until close: a partial group of 3 bytes cannot be encoded yet."""

    def close(self) -> None:
        if self._buffer:
            self._out.write(binascii.b2a_base64(self._buffer, newline=False))
            self._buffer.clear()


def _zip_info(name: str, st: os.stat_result) -> zipfile.ZipInfo:
    """What ``ZipFile.write`` would record for the file, under :func:`entry_name`."""
    stamp = time.localtime(st.st_mtime)[:6]
    stamp = max((1980, 1, 1, 0, 0, 0), min(stamp, (2107, 12, 31, 23, 59, 59)))
    info = zipfile.ZipInfo(entry_name(name), stamp)
    info.external_attr = (st.st_mode & 0xFFFF) << 16
    info.file_size = st.st_size  # lets zipfile choose ZIP64 for large files
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_response(out: BinaryIO, output_dir: Path, files: list[str], script_output: Path) -> None:
    """Write the OSCAR sync response for ``files`` (from :func:`list_output_files`) to ``out``."""
    if not files:
        with open(script_output, "rb") as text:
            shutil.copyfileobj(text, out, ENCODE_CHUNK)
        return
    encoder = Base64Writer(out)
    if len(files) == 1:
        with open_output(output_dir, files[0]) as single:
            shutil.copyfileobj(single, encoder, ENCODE_CHUNK)
    else:
        with zipfile.ZipFile(encoder, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as archive:
            for name in files:
                with open_output(output_dir, name) as source:
                    with archive.open(_zip_info(name, os.fstat(source.fileno())), "w") as entry:
                        shutil.copyfileobj(source, entry, ENCODE_CHUNK)
    encoder.close()
    out.write(b"\n")


#: The most of a failing script's output its error answer carries: the end, where the error
#: is (a script that failed after writing 12 MB answered those 12 MB).
ERROR_TAIL = 4096


def write_output_tail(out: BinaryIO, script_output: Path, limit: int = ERROR_TAIL) -> None:
    """A failed call's answer: the script's output, or its last ``limit`` bytes after a line
    saying how much was left out."""
    with open(script_output, "rb") as text:
        size = os.fstat(text.fileno()).st_size
        if size > limit:
            out.write(f"[the first {size - limit} of {size} bytes of the script's output are "
                      f"left out]\n".encode())
            text.seek(size - limit)
        shutil.copyfileobj(text, out, ENCODE_CHUNK)
