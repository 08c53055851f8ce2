"""The decoder is versioned: its pixels are pinned on reference images per decoder identity, so a change that alters
decoded pixels cannot slip into a cache keyed by an unchanged identity; and the feature cache follows the identity."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tasks.dataset import images
from tasks.dataset.images import decoder_identity, load_uint8

OPENCLIPART = Path("/usr/share/openclipart/png")  # installed by scripts/install.sh (Debian openclipart-png)

# sha256 (first 16 hex) of load_uint8's output, per decoder identity. When a change to tasks/dataset/images.py (or a
# new Pillow) changes these, bump DECODER_VERSION (or the Pillow pin) and record the new identity's row here.
REFERENCE = {
    "decoder-1/pillow-13.0.0": {
        "animals/2_dead_frogs_lumen_desig_01.png|64|pad": "7c05658577a76547",
        "animals/2_dead_frogs_lumen_desig_01.png|96|crop": "2f4daf3835a5adb9",
        "animals/2_dead_frogs_lumen_desig_01.png|128|squash": "dea9c2b9484285b2",
        "food/beverages/alcohol/beer.png|64|pad": "10648c5ef1bffe63",
        "food/beverages/alcohol/beer.png|96|crop": "30a9c1f649769bd5",
        "food/beverages/alcohol/beer.png|128|squash": "a13dbb00abf8dc0d",
        "transportation/aiga-symbols/aiga_arriving_flights_.png|64|pad": "1cbb1101597f4b7e",
        "transportation/aiga-symbols/aiga_arriving_flights_.png|96|crop": "646d0d49028795f0",
        "transportation/aiga-symbols/aiga_arriving_flights_.png|128|squash": "30e45fec62b3fd9b",
    },
}


def test_decoded_pixels_match_the_reference_of_this_decoder_identity():
    identity = decoder_identity()
    assert identity in REFERENCE, (f"no reference pixels for {identity}: a new Pillow or DECODER_VERSION; record "
                                   f"its row (and re-extract features: the fingerprint changed)")
    for key, want in REFERENCE[identity].items():
        rel, size, mode = key.split("|")
        got = hashlib.sha256(load_uint8(OPENCLIPART / rel, int(size), mode).tobytes()).hexdigest()[:16]
        assert got == want, f"{key}: decoded pixels changed under {identity}; bump DECODER_VERSION"


def test_a_new_decoder_identity_re_extracts_everything_and_switching_back_hits_the_old_cache(tmp_path, clipart_raw,
                                                                                            monkeypatch):
    from tasks.extraction.feature_store import open_store
    from tasks.features import run_features
    from tasks.ingest import run_ingest
    from tests.conftest import make_project, project_params

    raw = tmp_path / "src"
    for c in ("animals", "food"):
        shutil.copytree(clipart_raw / c, raw / c)
    paths = make_project(tmp_path / "proj", raw)
    params = project_params(paths)
    run_ingest(params, paths)
    first = run_features(params, paths)
    assert first.extracted == first.samples > 0
    provenance = open_store(params, paths).provenances()
    assert provenance and provenance[0]["decoder"] == decoder_identity() and provenance[0]["engine"] == "onnxruntime"

    monkeypatch.setattr(images, "DECODER_VERSION", images.DECODER_VERSION + 1)  # as after a pixel-changing edit
    changed = run_features(params, paths)
    assert changed.fingerprint != first.fingerprint and changed.extracted == changed.samples == first.samples
    monkeypatch.undo()
    back = run_features(params, paths)
    assert back.fingerprint == first.fingerprint and back.extracted == 0 and back.cache_hits == first.samples


@pytest.fixture(autouse=True)
def _needs_openclipart():
    if not OPENCLIPART.is_dir():
        pytest.fail("openclipart-png is not installed: run bash scripts/install.sh")
