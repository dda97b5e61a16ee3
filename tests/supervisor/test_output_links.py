"""Issue 15: outputs never follow a symbolic link out of $TMP_OUTPUT_DIR (the answer, the zip
and the upload), and zip entry and object names stay relative and clean. Real supervisor runs
(the script makes the links), a real moto S3 server with real minio SDK uploads."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

from tests.s3server import S3Server

from .conftest import Runner, b64, make_env, run_inprocess
from .test_upload import minio_entry, objects, service_config, write_secret

SECRET = "TOP-SECRET-CONTENT"

LINKS = (
    f'printf "{SECRET}" > "$SECRET_FILE"\n'
    'ln -s "$SECRET_FILE" "$TMP_OUTPUT_DIR/passwd"\n'          # a file link out
    'ln -s "$(dirname "$SECRET_FILE")" "$TMP_OUTPUT_DIR/etc"\n'  # a folder link out
    'mkfifo "$TMP_OUTPUT_DIR/fifo"\n'                          # would block a reader
)


def _env(tmp_path: Path, script: str) -> dict[str, str]:
    outside = tmp_path / "outside"
    outside.mkdir()
    return make_env(f'SECRET_FILE="{outside}/secret.txt"\n' + script, tmpdir=tmp_path / "w")


def test_a_lone_link_is_not_the_answer(run: Runner, tmp_path: Path) -> None:
    res = run(b64(b"x"), _env(tmp_path, LINKS + 'printf "real" > "$TMP_OUTPUT_DIR/real.txt"\n'))
    assert res.rc == 0, res.stdout
    assert base64.b64decode(res.stdout) == b"real"  # the one regular file; links skipped


def test_links_stay_out_of_the_zip_and_names_are_clean(run: Runner, tmp_path: Path) -> None:
    script = LINKS + (
        'printf a > "$TMP_OUTPUT_DIR/a.txt"\n'
        'printf b > "$TMP_OUTPUT_DIR/back\\\\slash.txt"\n'
        "printf c > \"$TMP_OUTPUT_DIR/$(printf 'ctl\\001char')\"\n"
        "printf d > \"$TMP_OUTPUT_DIR/$(printf 'bad\\377utf8')\"\n")
    res = run(b64(b"x"), _env(tmp_path, script))
    assert res.rc == 0, res.stdout
    data = base64.b64decode(res.stdout)
    assert SECRET.encode() not in data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(["a.txt", "back/slash.txt", "ctl_char", "bad\ufffdutf8"])
        assert archive.read("a.txt") == b"a"
        for name in names:
            assert not name.startswith("/") and ".." not in name.split("/")


def test_links_are_not_uploaded(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    outputs = [{"storage_provider": "minio.default", "path": f"{bucket}/out"}]
    script = LINKS + 'printf a > "$TMP_OUTPUT_DIR/a.txt"\nprintf b > "$TMP_OUTPUT_DIR/b.txt"\n'
    env = make_env(f'SECRET_FILE="{tmp_path}/secret.txt"\n' + script,
                   service_config(s3, outputs), tmp_path / "w",
                   **write_secret(tmp_path, {"minio": {"default": minio_entry(s3)}}))
    res = run_inprocess(b64(b"x"), env)
    assert res.rc == 0, res.stdout
    assert objects(s3, bucket) == {"out/a.txt": b"a", "out/b.txt": b"b"}
