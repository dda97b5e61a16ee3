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
import zipfile
from pathlib import Path
from typing import BinaryIO

#: Bytes encoded per step; a multiple of 3 so no padding appears mid-stream.
ENCODE_CHUNK = 3 << 18


def list_output_files(output_dir: Path) -> list[str]:
    """Regular files under ``output_dir`` (recursive), as sorted '/'-separated relative names."""
    names = []
    for root, _dirs, files in os.walk(output_dir):
        for name in files:
            full = Path(root, name)
            if full.is_file():
                names.append(full.relative_to(output_dir).as_posix())
    return sorted(names)


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


def write_response(out: BinaryIO, output_dir: Path, files: list[str], script_output: Path) -> None:
    """Write the OSCAR sync response for ``files`` (from :func:`list_output_files`) to ``out``."""
    if not files:
        with open(script_output, "rb") as text:
            shutil.copyfileobj(text, out, ENCODE_CHUNK)
        return
    encoder = Base64Writer(out)
    if len(files) == 1:
        with open(output_dir / files[0], "rb") as single:
            shutil.copyfileobj(single, encoder, ENCODE_CHUNK)
    else:
        with zipfile.ZipFile(encoder, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as archive:
            for name in files:
                archive.write(output_dir / name, arcname=name)
    encoder.close()
    out.write(b"\n")
