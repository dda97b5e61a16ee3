"""One invocation of a function: body in, script run, outputs uploaded, response out.

This is the in-process entry point the embedded provider calls from many threads at once, so
it only uses what it is given: the ``env`` mapping (never ``os.environ``), absolute paths in a
private temporary directory (never the cwd), and a per-call logger. See the package docstring
for the contract and for how it improves on OSCAR's faas-supervisor.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping

from ..contract import CGI_JOB_ANSWER, EXIT_BAD_INPUT, JOB_ANSWER_LOG
from .config import load_config, load_script
from .errors import SupervisorError
from .inputs import save_body
from .logs import SupervisorLog, stderr_logger
from .outputs import list_output_files, write_output_tail, write_response
from .runner import run_script
from .upload import resolve_targets, secret_environment, upload_outputs


def supervise(
    body: BinaryIO,
    out: BinaryIO,
    env: Mapping[str, str],
    log: logging.Logger | None = None,
    *,
    timings: dict[str, float] | None = None,
) -> int:
    """Run one invocation: read the request body from `body`, write the response to `out`,
    return the exit code (0 ok). Never touches os.environ or the cwd.

    :param body: the request body, read in chunks until EOF.
    :param out: receives the response, or the script output if it failed, or a one-line error.
    :param env: the function's environment (``SCRIPT``, ``FUNCTION_CONFIG``, ``LOG_LEVEL``,
        ``OSCAR_STORAGE_SECRET``, ``OSCAR_SECRETS_DIR``, ``TMPDIR``, the user's variables...).
    :param log: where log lines go (default: a private stderr logger); its handlers receive
        the records at or above the function's log level. Nothing is logged to `out`.
    :param timings: when given, receives the seconds spent in each phase: ``setup``
        (configuration, workspace, input), ``script`` and ``upload`` (outputs to storage and
        the response); the provider turns them into a ``Server-Timing`` header.
    :returns: 0 on success, the script's exit status if it failed, ``EXIT_BAD_INPUT`` (65)
        when the body is neither JSON nor base64, 1 for any other error.
    """
    slog = SupervisorLog(log or stderr_logger())
    try:
        return _supervise(body, out, env, slog, {} if timings is None else timings)
    except SupervisorError as err:
        slog.error("%s", err)
        _write_line(out, str(err))
        return EXIT_BAD_INPUT if err.status == 400 else 1
    except Exception as err:  # a bug: log the traceback, still give the caller one clear line
        slog.exception("supervisor internal error")
        _write_line(out, f"supervisor internal error: {type(err).__name__}: {err}")
        return 1


def _supervise(body: BinaryIO, out: BinaryIO, env: Mapping[str, str], log: SupervisorLog,
               timings: dict[str, float]) -> int:
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = now - mark
        mark = now

    config = load_config(env)
    log.level = config.log_level
    script = load_script(env)
    targets = resolve_targets(config, env)  # before the script: fail fast on missing keys
    secret_env = secret_environment(env)
    with _workspace(env) as root:
        log.debug("workspace %s, %d output target(s)", root, len(targets))
        input_dir, output_dir = root / "input", root / "output"
        input_dir.mkdir()
        output_dir.mkdir()
        input_path, kind = save_body(body, input_dir)
        log.info("input stored in %s (%s, %d bytes)", input_path.name, kind, input_path.stat().st_size)
        event_env: dict[str, str] = {}
        if kind == "json":  # a MinIO event or a stored job input (.events)
            from .events import resolve_input
            event_env = resolve_input(input_path, kind, input_dir, config, env, log)
            input_path = Path(event_env.pop("INPUT_FILE_PATH", input_path))
        script_output = root / "script-output"
        phase("setup")
        code = _run_user_script(script, {**env, **secret_env, **event_env}, root, input_path,
                                output_dir,
                                script_output, log)
        phase("script")
        if code != 0:
            log.error("the user script exited with status %d; outputs are not uploaded", code)
            write_output_tail(out, script_output)
            out.flush()
            return code
        files = list_output_files(output_dir)
        log.info("the user script succeeded with %d output file(s)", len(files))
        errors = upload_outputs(targets, output_dir, files, env, log)
        if errors:
            for line in errors:
                _write_line(out, line)
            return 1
        if env.get(CGI_JOB_ANSWER) == JOB_ANSWER_LOG:  # a job: its log, not its outputs
            files = []
        write_response(out, output_dir, files, script_output)
        out.flush()
        phase("upload")
        return 0


def _run_user_script(
    script: bytes | None,
    env: Mapping[str, str],
    root: Path,
    input_path: Path,
    output_dir: Path,
    script_output: Path,
    log: SupervisorLog,
) -> int:
    """Run the script with the function env plus OSCAR's three paths; no script is a no-op."""
    if script is None:
        log.warning("No user script found!")  # OSCAR carries on with an empty output too
        script_output.touch()
        return 0
    script_path = root / "script.sh"  # outside TMP_INPUT_DIR, so the script sees only its input
    script_path.write_bytes(script)
    script_env = dict(env)
    script_env.update(
        INPUT_FILE_PATH=str(input_path),
        TMP_INPUT_DIR=str(input_path.parent),
        TMP_OUTPUT_DIR=str(output_dir),
    )
    log.info("running the user script")
    return run_script(script_path, script_env, script_output, log)


@contextmanager
def _workspace(env: Mapping[str, str]) -> Iterator[Path]:
    """A private directory under the env's ``TMPDIR`` (or the system default), removed after."""
    base = env.get("TMPDIR")
    parent = base if base and os.path.isdir(base) else None
    root = Path(tempfile.mkdtemp(prefix="oscar-supervisor-", dir=parent))
    try:
        yield root
    finally:
        _rmtree(root)


def _rmtree(root: Path) -> None:
    """Remove ``root`` even if the script left read-only directories behind."""

    def retry(func, path, _exc_info):  # type: ignore[no-untyped-def]
        try:
            parent = os.path.dirname(path)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | stat.S_IRWXU)
            func(path)
        except OSError:
            pass

    shutil.rmtree(root, onerror=retry)


def _write_line(out: BinaryIO, message: str) -> None:
    """Write ``message`` as exactly one line (the caller sees it in the HTTP error body)."""
    try:
        out.write(" ".join(message.split()).encode("utf-8", "replace") + b"\n")
        out.flush()
    except (OSError, ValueError):
        pass  # the caller hung up; the log still has the message
