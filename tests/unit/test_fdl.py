"""FDL loading: cluster keys, shared storage providers, scripts relative to the file."""

from __future__ import annotations

import textwrap

import pytest

from oscar_faas.errors import FDLError
from oscar_faas.fdl import load_fdl


def write(tmp_path, text: str, script: str | None = "echo hi\n"):
    fdl = tmp_path / "svc.yaml"
    fdl.write_text(textwrap.dedent(text))
    if script is not None:
        (tmp_path / "script.sh").write_text(script)
    return fdl


def test_services_scripts_and_shared_sections(tmp_path):
    fdl = write(tmp_path, """
        functions:
          oscar:
          - my-cluster:
              name: one
              image: alpine
              cpu: 1.0
              script: script.sh
              environment:
                Variables: {A: "1"}
          - other:
              name: two
              image: alpine
              script: script.sh
        storage_providers:
          s3: {aws: {access_key: k, secret_key: s, region: eu-west-1}}
        clusters:
          my-cluster: {endpoint: "http://x", auth_user: u, auth_password: p, ssl_verify: true}
        """)
    loaded = load_fdl(fdl)
    assert [s.name for s in loaded.services] == ["one", "two"]
    assert loaded.cluster_ids == ["my-cluster", "other"]
    one = loaded.services[0]
    assert one.script == "echo hi\n" and one.cpu == "1.0" and one.cluster_id == "my-cluster"
    assert one.environment["variables"] == {"A": "1"}
    assert one.storage_providers["s3"]["aws"]["region"] == "eu-west-1"
    assert one.clusters["my-cluster"]["endpoint"] == "http://x"


def test_script_is_read_relative_to_the_fdl_not_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    fdl = write(sub, """
        functions:
          oscar:
          - c: {name: a, image: i, script: script.sh}
        """, script="relative\n")
    monkeypatch.chdir(tmp_path)
    assert load_fdl(fdl).services[0].script == "relative\n"


def test_broken_yaml_names_file_and_line(tmp_path):
    fdl = write(tmp_path, """
        functions:
          oscar:
          - c: {name: a, image: i
        """)
    with pytest.raises(FDLError, match=r"svc\.yaml at line \d+, column \d+"):
        load_fdl(fdl)


def test_missing_script_file_names_it(tmp_path):
    fdl = write(tmp_path, """
        functions:
          oscar:
          - c: {name: a, image: i, script: nope.sh}
        """, script=None)
    with pytest.raises(FDLError, match=r"nope\.sh.*cannot be read"):
        load_fdl(fdl)


def test_missing_file_and_missing_functions(tmp_path):
    with pytest.raises(FDLError, match="cannot read FDL file"):
        load_fdl(tmp_path / "absent.yaml")
    fdl = write(tmp_path, "services: []\n")
    with pytest.raises(FDLError, match="no 'functions.oscar'"):
        load_fdl(fdl)


def test_bad_field_type_names_the_file(tmp_path):
    fdl = write(tmp_path, """
        functions:
          oscar:
          - c: {name: a, image: i, script: script.sh, enable_gpu: maybe}
        """)
    with pytest.raises(FDLError, match=r"svc\.yaml.*enable_gpu"):
        load_fdl(fdl)


def test_misspelled_keys_are_warned_about_with_the_closest_valid_one(tmp_path):
    fdl = write(tmp_path, """
        functions:
          oscar:
          - my-cluster:
              name: typo
              image: alpine
              memroy: 1Gi
              script: script.sh
              environment:
                Varaibles: {A: "1"}
              synchronous: {min_scal: 1}
              input:
              - {storage_provider: minio, path: in, sufix: [".jpg"]}
              log_level: CRITICAL
              Image_Prefetch: true
        storage_provider:
          s3: {}
        """)
    loaded = load_fdl(fdl)
    (service,) = loaded.services
    assert service.memory == "" and service.environment["variables"] == {}  # ignored...
    assert len(loaded.warnings) == 5, loaded.warnings  # ... but each one said
    text = "\n".join(loaded.warnings)
    assert all(line.startswith(f"FDL file {fdl}: ") for line in loaded.warnings)
    assert "unknown key 'storage_provider' is ignored; did you mean 'storage_providers'?" \
        in text
    assert "service 'typo': unknown key 'memroy' is ignored; did you mean 'memory'?" in text
    assert "'environment.Varaibles' is ignored; did you mean 'environment.variables'?" in text
    assert "'synchronous.min_scal' is ignored; did you mean 'synchronous.min_scale'?" in text
    assert "'input[0].sufix' is ignored; did you mean 'input[0].suffix'?" in text
    # Go matches keys ignoring case, and so does the check: Image_Prefetch is no typo.
    assert "Image_Prefetch" not in text


def test_a_key_close_to_nothing_is_still_named(tmp_path):
    fdl = write(tmp_path, """
        functions:
          oscar:
          - c: {name: x, image: alpine, script: script.sh, zzz: 1}
        """)
    assert load_fdl(fdl).warnings == [
        f"FDL file {fdl}: service 'x': unknown key 'zzz' is ignored"]


def test_a_valid_file_has_no_warnings():
    from pathlib import Path
    examples = Path(__file__).resolve().parents[2] / "examples"
    for path in sorted(examples.rglob("*.yaml")):
        text = path.read_text()
        if "functions:" in text:
            assert load_fdl(path).warnings == [], path
