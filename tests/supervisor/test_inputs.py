"""Body -> input file: JSON sniffing and the streaming base64 decoder, on real files."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest

from oscar_faas.supervisor import inputs
from oscar_faas.supervisor.errors import InvalidInput
from oscar_faas.supervisor.inputs import Base64Decoder, save_body


class Trickle(io.RawIOBase):
    """A body that returns at most ``step`` bytes per read, like a socket or pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data[self._pos : self._pos + min(self._step, size if size >= 0 else self._step)]
        self._pos += len(chunk)
        return chunk


def save(data: bytes, tmp_path: Path, step: int | None = None) -> tuple[bytes, str]:
    body = Trickle(data, step) if step else io.BytesIO(data)
    path, kind = save_body(body, tmp_path)  # type: ignore[arg-type]
    assert path.parent == tmp_path and path.name.startswith("event-file-")
    return path.read_bytes(), kind


@pytest.mark.parametrize("step", [None, 1, 5, 77])
def test_base64_with_newlines_crlf_and_odd_reads(tmp_path: Path, step: int | None) -> None:
    data = os.urandom(1000)
    wrapped = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert save(b"\n " + wrapped, tmp_path, step) == (data, "base64")


def test_base64_without_padding_and_urlsafe(tmp_path: Path) -> None:
    data = b"\xfb\xff\xfe hello?"
    text = base64.urlsafe_b64encode(data).rstrip(b"=")
    assert b"-" in text or b"_" in text
    assert save(text, tmp_path) == (data, "base64")


def test_chunk_boundary_inside_a_quad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "CHUNK", 7)
    data = os.urandom(301)
    assert save(base64.b64encode(data), tmp_path) == (data, "base64")


@pytest.mark.parametrize(
    "body, message",
    [
        (b"aGVsbG8%gd29y", "unexpected byte b'%' at offset 7"),
        (b"aGk=aGk=", "padding"),
        (b"aGk=\naGk=", "padding"),
        (b"aGVsbG8", None),  # missing padding is fine
        (b"aGVsb", "truncated"),
        (b"\xef\xbb\xbfaGk=", "unexpected byte"),
    ],
)
def test_base64_errors(tmp_path: Path, body: bytes, message: str | None) -> None:
    if message is None:
        assert save(body, tmp_path)[1] == "base64"
        return
    with pytest.raises(InvalidInput, match="^invalid base64 input: ") as err:
        save(body, tmp_path)
    assert message in str(err.value)


def test_whitespace_only_body_is_empty(tmp_path: Path) -> None:
    assert save(b" \n\t\r\n", tmp_path) == (b"", "empty")


def test_json_kept_exactly_even_with_leading_whitespace_chunks(tmp_path: Path) -> None:
    body = b"\n\n   \t" + b'{"k": "v",   "n": [1, 2, 3]}' + b"\n"
    assert save(body, tmp_path, step=2) == (body, "json")


def test_big_json_is_stored_unparsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "JSON_PARSE_LIMIT", 10)
    body = b'{"truncated": '  # above the limit: not parsed, stored as sent
    assert save(body, tmp_path) == (body, "json")


def test_decoder_counts_bytes(tmp_path: Path) -> None:
    sink = io.BytesIO()
    decoder = Base64Decoder(sink)
    for piece in (b"aG", b"Vs\nbG", b"8="):
        decoder.feed(piece)
    decoder.finish()
    assert (sink.getvalue(), decoder.written) == (b"hello", 5)
