"""A warm worker that speaks protocol v1 by hand (no helper), and misbehaves on request.

The first word of the input picks: ``stray`` (answer, then write a line and a half of garbage
on the answer pipe, between calls), ``nonewline`` (answer without the final newline),
``prefix`` (output without a newline, then the answer on the same line), ``exit`` (answer, then
exit a moment later: between calls); always: write the worker's pid into ``pid.txt``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

IN = int(os.environ["OSCAR_WORKER_IN_FD"])
OUT = int(os.environ["OSCAR_WORKER_OUT_FD"])


def main() -> None:
    os.write(OUT, b'{"ready": true}\n')
    with open(IN, "rb") as requests:
        for line in requests:
            request = json.loads(line)
            env = request["env"]
            word = Path(env["INPUT_FILE_PATH"]).read_bytes().split(b" ")[0]
            Path(env["TMP_OUTPUT_DIR"], "pid.txt").write_text(str(os.getpid()))
            answer = json.dumps({"id": request["id"], "ok": True}).encode()
            if word == b"stray":
                os.write(OUT, answer + b'\nnot json, between calls\n{"half a line')
            elif word == b"nonewline":
                os.write(OUT, answer)
            elif word == b"prefix":
                os.write(OUT, b"progress: 100% {" + answer + b"\n")
            elif word == b"exit":
                os.write(OUT, answer + b"\n")
                time.sleep(0.3)  # the runtime has taken it back as idle by then
                os._exit(0)
            else:
                os.write(OUT, answer + b"\n")


if __name__ == "__main__":
    main()
