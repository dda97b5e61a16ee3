"""The response encoder: base64 in one line whatever the write sizes, zip to a pipe."""

from __future__ import annotations

import base64
import io
import os
import random
import zipfile
from pathlib import Path

from oscar_faas.supervisor.outputs import ENCODE_CHUNK, Base64Writer, list_output_files, write_response


def test_writer_is_exact_for_any_write_sizes() -> None:
    data = os.urandom(ENCODE_CHUNK * 2 + 5)
    out = io.BytesIO()
    writer = Base64Writer(out)
    pos, rng = 0, random.Random(1)
    while pos < len(data):
        step = rng.choice([1, 2, 7, 4096, ENCODE_CHUNK + 1])
        assert writer.write(data[pos : pos + step]) == len(data[pos : pos + step])
        pos += step
    writer.close()
    assert b"\n" not in out.getvalue() and b"=" not in out.getvalue()[:-2]
    assert base64.b64decode(out.getvalue(), validate=True) == data


def test_listing_and_zip_response(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("z.txt", "d/a.txt", "d/e/b.bin"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "empty-dir").mkdir()
    files = list_output_files(tmp_path)
    assert files == ["d/a.txt", "d/e/b.bin", "z.txt"]
    out = io.BytesIO()
    write_response(out, tmp_path, files, tmp_path / "unused")
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(out.getvalue()[:-1], validate=True)))
    assert {n: archive.read(n) for n in archive.namelist()} == {n: n.encode() for n in files}
