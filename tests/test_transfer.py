"""Transfer is real: the pretrained backbone's head beats the same architecture with random weights by 20+ points."""

from __future__ import annotations

from tasks.core.stages import stage_function
from tests.conftest import make_project, project_params


def test_pretrained_beats_random_init_by_20_points(tmp_path, built_project, clipart_raw):
    _, _, results = built_project
    pretrained = results["evaluate"].accuracy

    paths = make_project(tmp_path / "random", clipart_raw, ["backbone.weights=random", "evaluate.artifact=head"])
    params = project_params(paths)
    for stage in ("ingest", "features", "head"):
        stage_function(stage)(params, paths)
    random_init = stage_function("evaluate")(params, paths).accuracy

    assert results["evaluate"].n >= 80  # a real held-out set, not a handful
    assert pretrained >= 0.55, pretrained
    assert pretrained - random_init >= 0.20, (pretrained, random_init)
