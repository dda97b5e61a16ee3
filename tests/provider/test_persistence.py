"""A restart loses nothing: deployments, secrets and secret files come back."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Callable

import pytest

from .conftest import ProviderProcess, secrets_folder


def test_restart_keeps_functions_and_secrets(make_provider: Callable[..., ProviderProcess],
                                             script: Callable[[str, str], str]) -> None:
    p = make_provider()
    reader = script("reader", 'cat "$OSCAR_SECRETS_DIR/db-pass"; printf " %s" "$GREETING"\n')
    assert p.request("POST", "/system/secrets",
                     json={"name": "db-pass", "value": "hunter2"}).status_code == 202
    p.deploy("keeper", reader, envVars={"GREETING": "hi"}, secrets=["db-pass"])
    p.deploy("gone", "cat")
    assert p.request("DELETE", "/system/functions",
                     json={"functionName": "gone"}).status_code == 202
    before = p.request("GET", "/system/function/keeper").json()

    p.restart()

    after = p.request("GET", "/system/function/keeper").json()
    assert {k: v for k, v in after.items() if k != "invocationCount"} == \
        {k: v for k, v in before.items() if k != "invocationCount"}
    assert [f["name"] for f in p.request("GET", "/system/functions").json()] == ["keeper"]
    assert p.request("GET", "/system/secrets").json() == [
        {"name": "db-pass", "namespace": "openfaas-fn"}]
    resp = p.invoke("keeper")
    assert resp.status_code == 200 and resp.text == "hunter2 hi"


def test_state_files_are_private_and_atomic(make_provider: Callable[..., ProviderProcess]
                                            ) -> None:
    p = make_provider()
    p.request("POST", "/system/secrets", json={"name": "tok", "value": "v"})
    p.deploy("fn-a", "cat", secrets=["tok"])
    data: Path = p.data_dir
    assert stat.S_IMODE((data / "secrets.json").stat().st_mode) == 0o600
    assert json.loads((data / "functions.json").read_text())["functions"][0][
        "deployment"]["service"] == "fn-a"
    secret_file = secrets_folder(data, "fn-a") / "tok"
    if (data / "isolation-area").exists():  # root: readable by the function's group alone
        uid = json.loads((data / "users.json").read_text())["uids"]["fn-a"]
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path, mode in ((secret_file, 0o640), (secret_file.parent, 0o750)):
            info = path.stat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, 0, uid)
    else:
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    assert not [f for f in data.rglob("*.tmp")]


def test_a_deleted_function_leaves_no_user_behind(make_provider: Callable[..., ProviderProcess]
                                                  ) -> None:
    """Issue 23.3: churned services leave no uid in ``users.json`` and no folder (as root)."""
    p = make_provider()
    if not (p.data_dir / "isolation-area").exists():
        pytest.skip("not root: functions share the provider's user, no uid to forget")
    users = p.data_dir / "users.json"
    for name in ("churn-a", "churn-b"):
        p.deploy(name, "cat")
        assert p.invoke(name, b"x").status_code == 200
    assert set(json.loads(users.read_text())["uids"]) >= {"churn-a", "churn-b"}
    folder = secrets_folder(p.data_dir, "churn-a").parent
    assert folder.is_dir()
    for name in ("churn-a", "churn-b"):
        assert p.request("DELETE", "/system/functions",
                         json={"functionName": name}).status_code == 202
    assert not {"churn-a", "churn-b"} & set(json.loads(users.read_text())["uids"])
    assert not folder.exists()


def test_corrupt_state_refuses_to_start(tmp_path: Path) -> None:
    from .conftest import ProviderProcess as Proc
    data = tmp_path / "data"
    data.mkdir()
    (data / "functions.json").write_text("{broken")
    proc = Proc(data, tmp_path / "p.log")
    try:
        proc.start()
        raise AssertionError("provider started on a corrupt state")
    except RuntimeError as err:
        assert "cannot read provider state" in str(err)
    finally:
        proc.stop()
