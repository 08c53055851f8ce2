"""Transfer is real: each packaged backbone's head beats the same architecture with random weights by 20+ points
(which also proves the packaged weights are mapped onto the right tensors: a wrong mapping scores like random)."""

from __future__ import annotations

import pytest

from tasks.core.stages import stage_function
from tests.conftest import make_project, project_params

pytestmark = pytest.mark.slow  # each test extracts the clip-art set twice (pretrained and random weights)


def _head_accuracy(dest, clipart_raw, overrides) -> tuple[float, int]:
    """Test accuracy of a logistic-regression head on the backbone's cached features (no fine-tune, no export)."""
    paths = make_project(dest, clipart_raw, [*overrides, "evaluate.artifact=head"])
    params = project_params(paths)
    for stage in ("ingest", "features", "head"):
        stage_function(stage)(params, paths)
    result = stage_function("evaluate")(params, paths)
    return result.accuracy, result.n


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_packaged_weights_beat_random_init_by_20_points(tmp_path, clipart_raw, backbone):
    pretrained, n = _head_accuracy(tmp_path / "packaged", clipart_raw, [f"backbone.name={backbone}"])
    random_init, _ = _head_accuracy(tmp_path / "random", clipart_raw, [f"backbone.name={backbone}",
                                                                      "backbone.weights=random"])
    print(f"\n{backbone}: packaged {pretrained:.3f}, random {random_init:.3f} on {n} test images")
    assert n >= 80  # a real held-out set, not a handful
    assert pretrained >= 0.55, pretrained
    assert pretrained - random_init >= 0.20, (pretrained, random_init)
