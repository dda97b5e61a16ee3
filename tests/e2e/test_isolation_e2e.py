"""Host mode isolation (issue 14): a hostile service, deployed through ``oscar-faas serve``
on the embedded provider's host runtime, tries every leak measured before it existed.

It reads ``/proc/<pid>/environ`` of its parent and every ancestor (its runtime, the
provider, the gateway, ...), lists and reads the provider's data dir and another service's
secrets folder, signals the provider, and calls the provider's ``/system/secrets`` with every
value it found. The gateway's ``OSCAR_PASSWORD``, ``MINIO_SECRET_KEY`` and the provider's
own password are random values known to the test: none may show up in what the service
saw, and no call may be let in; the service's own secret must still be readable.
"""

from __future__ import annotations

import base64
import os
import secrets
import textwrap

import pytest
import requests

from tests.livegateway import LiveGateway

from .test_serve_e2e import provider_credentials, provider_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="host mode isolates functions only when the "
                       "provider runs as root (as CI does); as another user they share its "
                       "uid, which the README says plainly"),
]

HOSTILE = r"""#!/bin/sh
out="$TMP_OUTPUT_DIR/report.txt"
found="$TMPDIR/found.txt"
: > "$found"
{
echo "== whoami uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "== own env secret: $MY_TOKEN"
echo "== own secrets folder $OSCAR_SECRETS_DIR:"
cat "$OSCAR_SECRETS_DIR"/* 2>&1; echo
pid=$$
while [ "$pid" -gt 1 ]; do
  ppid=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f2)
  echo "== environ of $ppid: $(tr '\0' ' ' < /proc/$ppid/cmdline | cut -c1-120)"
  rm -f "$TMPDIR/env.txt"
  if tr '\0' '\n' < /proc/$ppid/environ > "$TMPDIR/env.txt" 2>/dev/null; then
    cat "$TMPDIR/env.txt"; cut -d= -f2- "$TMPDIR/env.txt" >> "$found"
  else
    echo "DENIED reading /proc/$ppid/environ"
  fi
  if [ "$(stat -c %u /proc/$ppid)" != "$(id -u)" ] && kill -0 "$ppid" 2>/dev/null; then
    echo "SIGNAL $ppid allowed"
  fi
  pid=$ppid
done
echo "== data dir $DATA_DIR:"
ls -la "$DATA_DIR" 2>&1
for f in secrets.json functions.json users.json provider.credentials provider.log; do
  cat "$DATA_DIR/$f" >> "$found" 2>&1 && echo "READ $f" && cat "$DATA_DIR/$f"
done
ls -la "$DATA_DIR/functions" "$DATA_DIR/functions/victim/secrets" 2>&1
cat "$DATA_DIR"/functions/victim/secrets/* 2>&1
echo "== the victim's folder beside mine:"
victim="$(dirname "$(dirname "$OSCAR_SECRETS_DIR")")/victim"
ls -la "$(dirname "$victim")" "$victim" "$victim/secrets" "$victim/home" 2>&1
cat "$victim"/secrets/* 2>&1; echo
echo "== /system/secrets with every value found:"
sort -u "$found" | while IFS= read -r value; do
  [ -n "$value" ] || continue
  for user in admin oscar; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -u "$user:$value" "$PROVIDER_URL/system/secrets")
    [ "$code" = 200 ] && echo "LET IN as $user"
  done
done
echo "without credentials: $(curl -s -o /dev/null -w '%{http_code}' "$PROVIDER_URL/system/secrets")"
echo "== done"
} > "$out" 2>&1
"""

VICTIM = """#!/bin/sh
echo victim > "$TMP_OUTPUT_DIR/out.txt"
"""


@pytest.mark.timeout(180)
def test_a_hostile_service_finds_nothing_of_the_gateway_provider_or_other_services(tmp_path):
    known = {name: secrets.token_hex(16) for name in (
        "OSCAR_PASSWORD", "MINIO_SECRET_KEY", "MINIO_ACCESS_KEY", "victim", "own")}
    gw = LiveGateway(tmp_path, env={k: known[k] for k in (
        "OSCAR_PASSWORD", "MINIO_SECRET_KEY", "MINIO_ACCESS_KEY")})
    gw.password = known["OSCAR_PASSWORD"]
    (tmp_path / "hostile.sh").write_text(HOSTILE)
    (tmp_path / "victim.sh").write_text(VICTIM)
    with gw:
        _, _, provider_url = provider_of(gw)
        _, provider_password = provider_credentials(gw)
        client = gw.oscar_python_client()
        for name, service in (("victim", f"""\
                  name: victim
                  image: alpine
                  cpu: '0.1'
                  script: victim.sh
                  environment:
                    secrets:
                      VICTIM_TOKEN: {known["victim"]}
            """), ("hostile", f"""\
                  name: hostile
                  image: alpine
                  cpu: '0.1'
                  log_level: CRITICAL
                  script: hostile.sh
                  environment:
                    variables:
                      PROVIDER_URL: {provider_url}
                      DATA_DIR: {tmp_path / "data"}
                    secrets:
                      MY_TOKEN: {known["own"]}
            """)):
            fdl = tmp_path / f"{name}.yaml"
            fdl.write_text("functions:\n  oscar:\n  - oscar-cluster:\n"
                           + textwrap.dedent(service).replace("\n", "\n      ")
                           .join(["      ", ""]).rstrip() + "\n")
            assert client.create_service(str(fdl)).status_code == 201, gw.log()[-3000:]
        token = client.get_service("hostile").json()["token"]
        resp = requests.post(gw.url + "/run/hostile", data=base64.b64encode(b"x"),
                             headers={"Authorization": f"Bearer {token}"}, timeout=120)
        assert resp.status_code == 200, resp.text
        report = base64.b64decode(resp.content).decode(errors="replace")
        log = gw.log()
        area = (tmp_path / "data" / "isolation-area").read_text().strip()
        # the victim is deployed, and its secret is where the hostile service looked
        assert client.get_service("victim").status_code == 200
        victim_secrets = os.path.join(area, "victim", "secrets")
        assert known["victim"] in "".join(
            open(os.path.join(victim_secrets, f)).read() for f in os.listdir(victim_secrets))
    # it ran, as a user of its own, and its own secret is there for it
    assert "== done" in report, report
    assert "uid=0 " not in report and "groups=0" not in report, report
    assert known["own"] in report, report
    # nothing of the gateway's, the provider's or the other service's
    for what, value in [*known.items(), ("provider password", provider_password)]:
        if what == "own":
            continue
        assert value not in report, f"{what} leaked:\n{report}"
    # the ancestors' environments and the data dir were tried and refused
    assert report.count("DENIED reading /proc/") >= 2, report
    assert "SIGNAL" not in report and "READ " not in report, report
    assert "LET IN" not in report, report
    assert "without credentials: 401" in report, report
    assert "Traceback" not in log
