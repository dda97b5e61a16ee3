"""``oscar-faas job`` and ``oscar-faas jobs``: asynchronous invocations from the command line.

``job`` submits (``POST /job/<svc>``, the input base64-encoded as oscar-cli sends it) and
prints the job's name; ``jobs`` lists a service's jobs (every page of ``/system/logs/<svc>``),
prints one job's log (``--follow`` waits for it to finish first), or deletes jobs.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .contract import HEADER_JOB_NAME, JOB_FAILED, JOB_SUCCEEDED
from .errors import OscarFaasError

#: Seconds between two looks at a followed job.
FOLLOW_POLL = 0.5


def _read_input(args: argparse.Namespace) -> bytes:
    if args.text_input is not None:
        return args.text_input.encode("utf-8")
    try:
        return Path(args.input).read_bytes()
    except OSError as exc:
        raise OscarFaasError(f"cannot read input file {args.input}: {exc.strerror}") from None


def cmd_job(args: argparse.Namespace, client: Any) -> int:
    body = base64.b64encode(_read_input(args))
    kwargs: dict[str, Any] = {"data": body}
    if args.token:  # a Bearer header, not the session's Basic credentials
        kwargs.update(headers={"Authorization": f"Bearer {args.token}"},
                      auth=lambda request: request)
    resp = client._call("POST", f"/job/{args.service}", ok=(201,), **kwargs)
    print(resp.headers.get(HEADER_JOB_NAME, ""))
    return 0


def list_jobs(client: Any, service: str) -> dict[str, dict[str, str]]:
    """Every job of ``service``, following ``next_page`` as oscar-cli does."""
    jobs: dict[str, dict[str, str]] = {}
    page = ""
    while True:
        body = client._call("GET", f"/system/logs/{service}", ok=(200,),
                            params={"page": page}).json()
        jobs.update(body.get("jobs") or {})
        page = body.get("next_page") or ""
        if not page:
            return jobs


def _print_table(jobs: dict[str, dict[str, str]]) -> None:
    rows = [("NAME", "STATUS", "CREATED", "STARTED", "FINISHED")] + [
        (name, info.get("status", ""), info.get("creation_time", ""),
         info.get("start_time", ""), info.get("finish_time", ""))
        for name, info in sorted(jobs.items(), key=lambda kv: kv[1].get("creation_time", ""))]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def cmd_jobs(args: argparse.Namespace, client: Any) -> int:
    service, job = args.service, args.job
    if args.delete:
        if job:
            client._call("DELETE", f"/system/logs/{service}/{job}", ok=(204,))
        else:
            client._call("DELETE", f"/system/logs/{service}", ok=(204,),
                         params={"all": "true"} if args.all else None)
        return 0
    if not job:
        _print_table(list_jobs(client, service))
        return 0
    status = ""
    if args.follow:
        while True:
            status = list_jobs(client, service).get(job, {}).get("status", "")
            if not status:
                raise OscarFaasError(f"job {job} of service {service} not found")
            if status in (JOB_SUCCEEDED, JOB_FAILED):
                break
            time.sleep(FOLLOW_POLL)
    params = {"timestamps": "true"} if args.timestamps else None
    text = client._call("GET", f"/system/logs/{service}/{job}", ok=(200,),
                        params=params).text
    sys.stdout.write(text)
    sys.stdout.flush()
    return 1 if status == JOB_FAILED else 0


def add_parsers(sub: Any, client_flags: Callable[[argparse.ArgumentParser], None],
                make_client: Callable[[argparse.Namespace], Any]) -> None:
    """The two commands, added to the ``oscar-faas`` parser's subcommands."""
    p = sub.add_parser("job", help="invoke a service asynchronously (prints the job's name)",
                       description="Submit a job (POST /job/SERVICE): the input goes base64 "
                                   "encoded; prints the job's name, for 'oscar-faas jobs'.")
    p.add_argument("service")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", "-f", "--file-input", dest="input", help="input file")
    src.add_argument("--text-input", "-i", dest="text_input", help="input text")
    p.add_argument("--token", "-t", help="service token (default: use --user/--password)")
    client_flags(p)
    p.set_defaults(func=lambda a: cmd_job(a, make_client(a)))

    p = sub.add_parser("jobs", help="list a service's jobs, print one's log, delete jobs",
                       description="Without JOB: the service's jobs. With JOB: its log "
                                   "(--follow waits until it has finished; the exit status is "
                                   "1 when it failed). --delete removes JOB, or the succeeded "
                                   "jobs (every job with --all).")
    p.add_argument("service")
    p.add_argument("job", nargs="?", default="")
    p.add_argument("--follow", action="store_true", help="wait for JOB to finish")
    p.add_argument("--timestamps", action="store_true", help="start log lines with a time")
    p.add_argument("--delete", action="store_true", help="delete JOB or the succeeded jobs")
    p.add_argument("--all", action="store_true", help="with --delete and no JOB: every job")
    client_flags(p)
    p.set_defaults(func=lambda a: cmd_jobs(a, make_client(a)))
