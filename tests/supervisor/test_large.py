"""Bounded memory: ~200 MB of base64 in through a pipe, ~200 MB of base64 out, small peak RSS.

The body is generated on the fly (never held whole in the test either). The child's peak RSS
is sampled from ``/proc/<pid>/status`` (``VmHWM``) while it runs: ``ru_maxrss`` from
``wait4`` would also count the moment between fork and exec, when the child still maps the
whole pytest process (hundreds of MB once other tests have imported torch).
"""

from __future__ import annotations

import binascii
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from .conftest import REPO, make_env

RAW_BLOCK = 57 * 1024  # 57 raw bytes = one 76-column base64 line, as `base64` wraps
BLOCKS = 2700  # ~150 MB raw, ~203 MB of base64 text
RSS_LIMIT_KB = 100 * 1024


def vm_hwm_kb(pid: int) -> int:
    """Peak resident memory of the running process ``pid`` since its exec, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def test_large_body_and_response_with_bounded_memory(tmp_path: Path) -> None:
    script = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/copy.bin"\n'
    env = make_env(script, {"log_level": "INFO"}, tmp_path / "work", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscar_faas.supervisor"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    sent = hashlib.sha256()  # sha256 of the one-line base64 the response should be
    sent_bytes = 0

    def feed() -> None:
        nonlocal sent_bytes
        assert proc.stdin is not None
        seed = os.urandom(RAW_BLOCK)
        for i in range(BLOCKS):
            raw = i.to_bytes(8, "big") + seed[8:]  # every block differs
            text = binascii.b2a_base64(raw, newline=False)
            sent.update(text)
            wrapped = b"\n".join(text[j : j + 76] for j in range(0, len(text), 76)) + b"\n"
            sent_bytes += len(wrapped)
            proc.stdin.write(wrapped)
        proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    received = hashlib.sha256()
    received_bytes = 0
    assert proc.stdout is not None
    peak_kb = 0
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
        received.update(chunk)
        received_bytes += len(chunk)
        peak_kb = max(peak_kb, vm_hwm_kb(proc.pid))
    writer.join()
    proc.wait()
    proc.stdout.close()

    print(f"\nbody {sent_bytes} B, response {received_bytes} B, peak RSS {peak_kb} KiB")
    assert proc.returncode == 0
    assert sent_bytes > 200_000_000
    sent.update(b"\n")
    assert received.hexdigest() == sent.hexdigest()
    assert received_bytes > 200_000_000
    assert 0 < peak_kb < RSS_LIMIT_KB
    assert list((tmp_path / "work").iterdir()) == []
