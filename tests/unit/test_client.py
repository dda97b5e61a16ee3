"""The CLI client's streaming helpers: base64 out, oscar-cli's decoding rule back, progress."""

from __future__ import annotations

import base64
import io
import os

import pytest

from oscar_faas.client import Progress, base64_chunks, decode_answer


def test_base64_chunks_concatenate_to_standard_base64():
    data = os.urandom(1_000_003)
    assert b"".join(base64_chunks(io.BytesIO(data))) == base64.b64encode(data)


@pytest.mark.parametrize("answer, expected, decoded", [
    (base64.b64encode(b"\x00binary\xff") + b"\n", b"\x00binary\xff", True),
    (b"aGVs\r\nbG8=\n", b"hello", True),                      # wrapped lines are fine
    (b" (oo)\n  moo\n", b" (oo)\n  moo\n", False),            # plain text stays text
    (b"abc", b"abc", False),                                   # not a multiple of 4
    (b"", b"", False),
])
def test_decode_answer_follows_oscar_cli(answer, expected, decoded):
    out = io.BytesIO()
    assert decode_answer(io.BytesIO(answer), out) is decoded
    assert out.getvalue() == expected


def test_decode_answer_streams_large_bodies():
    data = os.urandom(3_000_000)
    out = io.BytesIO()
    assert decode_answer(io.BytesIO(base64.b64encode(data)), out)
    assert out.getvalue() == data


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_for_large_transfers():
    quiet = io.StringIO()
    bar = Progress("upload", 100 << 20, quiet)
    bar.advance(50 << 20)
    bar.close()
    assert quiet.getvalue() == ""
    tty = FakeTerminal()
    bar = Progress("upload", 100 << 20, tty)
    bar.advance(50 << 20)
    bar.close()
    assert "50%" in tty.getvalue() and "50.0 MiB" in tty.getvalue()
    small = FakeTerminal()
    Progress("upload", 10, small).advance(10)
    assert small.getvalue() == ""
