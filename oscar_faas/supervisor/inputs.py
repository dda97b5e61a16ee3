"""Turn the request body into ``$INPUT_FILE_PATH``, streaming, with bounded memory.

The body is read in chunks and never held whole. The first non-whitespace byte decides:

* ``{`` or ``[``: JSON. The bytes are stored exactly as sent (OSCAR re-serialised them, which
  changed spacing). Bodies up to :data:`JSON_PARSE_LIMIT` are parsed to check they are valid
  JSON; larger ones are accepted unparsed, since stdlib has no streaming JSON parser and a body
  starting with ``{``/``[`` cannot be base64 anyway (neither character is in its alphabet).
* anything else: base64, decoded chunk by chunk into the file. Whitespace anywhere is skipped
  (``base64`` wraps lines, ``curl --data-binary`` keeps them), the URL-safe alphabet and missing
  final padding are accepted, any other byte is an :class:`InvalidInput` naming it and its offset.
* an empty (or whitespace-only) body gives an empty file.
"""

from __future__ import annotations

import binascii
import json
import re
import uuid
from pathlib import Path
from typing import BinaryIO

from .config import WHITESPACE
from .errors import InvalidInput

try:  # SIMD base64, ~30x faster than binascii on large bodies; optional
    from pybase64 import b64decode as _fast_b64decode
except ImportError:  # pragma: no cover - pybase64 is a dependency, but stay usable without
    _fast_b64decode = None

#: Read size for the body: large enough for throughput, small enough to bound memory.
CHUNK = 1 << 20
#: JSON bodies up to this size are parsed to validate them; larger ones are stored unparsed.
JSON_PARSE_LIMIT = 8 << 20

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_URLSAFE = bytes.maketrans(b"-_", b"+/")
#: Bytes that make a chunk need the cleaning pass (each test is one fast memchr).
_UNCLEAN = tuple(bytes([b]) for b in WHITESPACE + b"-_")
#: A byte that is not whitespace (found without copying the chunk, as ``lstrip`` would).
_CONTENT = re.compile(b"[^" + re.escape(WHITESPACE) + b"]")


def save_body(body: BinaryIO, input_dir: Path) -> tuple[Path, str]:
    """Store the body as ``input_dir/event-file-<uuid4>``; return the path and the kind.

    :returns: ``(path, kind)`` where kind is ``"json"``, ``"base64"`` or ``"empty"``.
    :raises InvalidInput: the body is neither valid JSON nor valid base64.
    """
    path = input_dir / f"event-file-{uuid.uuid4()}"
    with open(path, "wb") as sink:
        # Leading whitespace is written as-is: JSON keeps it, base64 truncates it away.
        while True:
            chunk = _read(body)
            if not chunk:
                sink.truncate(0)
                return path, "empty"
            content = _CONTENT.search(chunk)  # the first byte that is not whitespace
            if content:
                break
            sink.write(chunk)
        assert content is not None  # the loop ends at a chunk with content
        if content.group() in (b"{", b"["):
            _copy(chunk, body, sink)
            size = sink.tell()
        else:
            if sink.tell():
                sink.seek(0)
                sink.truncate(0)
            decoder = Base64Decoder(sink)
            while chunk:
                decoder.feed(chunk)
                chunk = _read(body)
            decoder.finish()
            return path, "base64"
    if size <= JSON_PARSE_LIMIT:
        _check_json(path)
    return path, "json"


class Base64Decoder:
    """Incremental, strict base64 decoder writing to a binary sink.

    Keeps at most three undecoded characters between chunks, so memory is one chunk.
    """

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._pending = b""
        self._offset = 0  # raw body bytes seen, to report where a bad byte is
        self._padded = False
        self.written = 0

    def feed(self, chunk: bytes) -> None:
        """Decode one raw chunk (whitespace and all)."""
        start, self._offset = self._offset, self._offset + len(chunk)
        dirty = any(c in chunk for c in _UNCLEAN)
        data = chunk.translate(_URLSAFE, WHITESPACE) if dirty else chunk
        if not data:
            return
        if _fast_b64decode is None:  # the fast decoder validates the alphabet itself
            self._check_alphabet(chunk, data, start)
        if self._padded:
            raise InvalidInput(f"invalid base64 input: data after '=' padding near offset {start}")
        if self._pending:
            data = self._pending + data
        cut = len(data) - len(data) % 4
        # a whole body (the usual case) is decoded as it came, without copies
        block, self._pending = (data, b"") if cut == len(data) else (data[:cut], data[cut:])
        if block:
            try:
                self._decode(block, start)
            except InvalidInput:
                self._check_alphabet(chunk, data, start)  # name the bad byte if there is one
                raise
            self._padded = block.endswith(b"=")
        if self._padded and self._pending:
            raise InvalidInput(f"invalid base64 input: data after '=' padding near offset {start}")

    @staticmethod
    def _check_alphabet(chunk: bytes, data: bytes, start: int) -> None:
        """:raises InvalidInput: naming the first byte outside the alphabet and its offset."""
        bad = data.translate(None, _ALPHABET)
        if bad:
            where = start + chunk.index(bad[:1])
            raise InvalidInput(f"invalid base64 input: unexpected byte {bad[:1]!r} at offset {where}")

    def finish(self) -> None:
        """Decode what is left, adding the final padding if the sender left it out."""
        rest = self._pending
        self._pending = b""
        if not rest:
            return
        if len(rest) == 1:
            raise InvalidInput("invalid base64 input: truncated (one stray character at the end)")
        self._decode(rest + b"=" * (4 - len(rest)), self._offset)

    def _decode(self, block: bytes, near: int) -> None:
        try:
            if _fast_b64decode is not None:
                decoded = _fast_b64decode(block, validate=True)
            else:
                decoded = binascii.a2b_base64(block, strict_mode=True)
        except (binascii.Error, ValueError) as err:
            reason = str(err)
            try:  # the error path only: binascii's message says what is wrong, precisely
                binascii.a2b_base64(block, strict_mode=True)
            except binascii.Error as precise:
                reason = str(precise)
            raise InvalidInput(f"invalid base64 input: {reason} near offset {near}") from None
        self._sink.write(decoded)
        self.written += len(decoded)


def _read(body: BinaryIO) -> bytes:
    return body.read(CHUNK) or b""


def _copy(first: bytes, body: BinaryIO, sink: BinaryIO) -> None:
    """Write ``first`` and the rest of ``body`` to ``sink``, chunk by chunk."""
    chunk = first
    while chunk:
        sink.write(chunk)
        chunk = _read(body)


def _check_json(path: Path) -> None:
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInput(f"invalid JSON input: {err}") from None
