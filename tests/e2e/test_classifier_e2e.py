"""The use case end to end: a real pretrained CNN classifies a real photograph through
POST /run on the embedded default, driven by the oscar-faas CLI and oscar-python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "image-classification-sync"
CAT_CLASSES = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    pytest.importorskip("torch", reason="the classifier needs the 'ml' extra")
    pytest.importorskip("efficientnet_lite_pytorch", reason="the classifier needs 'ml'")
    dest = tmp_path_factory.mktemp("samples")
    out = subprocess.run([sys.executable, str(EXAMPLE / "fetch_samples.py"), str(dest),
                          "chelsea"], capture_output=True, text=True)
    if out.returncode == 2:
        pytest.skip("scikit-image (the sample photo) is not installed")
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def test_classifies_the_sample_photo_through_the_gateway(gateway, photo, tmp_path):
    env = {"OSCAR_ENDPOINT": gateway.url, "OSCAR_USERNAME": gateway.user,
           "OSCAR_PASSWORD": gateway.password, "PATH": "/usr/bin:/bin"}
    applied = subprocess.run(
        [sys.executable, "-m", "oscar_faas.cli", "apply",
         str(EXAMPLE / "image-classification-sync.yaml"),
         "--env", f"CLASSIFIER_HOME={EXAMPLE}", "--env", f"CLASSIFIER_PYTHON={sys.executable}"],
        env=env, capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    assert "image-classification-sync: created" in applied.stdout

    result = tmp_path / "prediction.json"
    client = gateway.oscar_python_client()
    resp = client.run_service("image-classification-sync", input=str(photo),
                              output=str(result), timeout=120)
    assert resp.status_code == 200, resp.text
    prediction = json.loads(result.read_text())
    top5 = prediction["predictions"]
    assert len(top5) == 5
    probabilities = [p["probability"] for p in top5]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 < p <= 1 for p in probabilities)
    assert top5[0]["label_id"] in CAT_CLASSES, top5[0]
    assert "cat" in top5[0]["label"]
