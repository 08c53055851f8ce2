"""`headstart predict` for every modality: files, folders and a CSV in, top-k rows out, an unreadable input reported
on its own row, and nothing heavy imported (neither torch, transformers, scikit-learn nor Prefect)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.conftest import REPO, venv_env

HEAVY = ("torch", "transformers", "sklearn", "prefect")


def _image_inputs(paths, folder: Path) -> dict:
    """Two held-out images in a folder, a PNG that is not one, and a CSV naming one image: {name: expected label}
    (None: any class; "error": its row reports why it could not be read)."""
    test = pd.read_parquet(paths.manifest).query("split == 'test'").head(2)
    for p in test["path"]:
        (folder / Path(p).name).write_bytes((paths.root / p).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    pd.DataFrame({"path": [str(paths.root / test["path"].iloc[0])]}).to_csv(folder.parent / "inputs.csv", index=False)
    return {**{Path(p).name: None for p in test["path"]}, "broken.png": "error", Path(test["path"].iloc[0]).name: None}


def _text_inputs(paths, folder: Path) -> dict:
    """A sports text file, an image named .txt, and a CSV with a business text inline: {name: expected label}."""
    (folder / "a.txt").write_text("The striker scored twice as the club won the cup final at Wembley.")
    (folder / "b.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")  # an image named .txt
    pd.DataFrame({"text": ["Shares fell as the bank reported lower profits and the market slid."]}).to_csv(
        folder.parent / "inputs.csv", index=False)
    return {"a.txt": "sports", "b.txt": "error", "inputs.csv#L2": "business"}


INPUTS = {"image": _image_inputs, "text": _text_inputs}


def test_predict_labels_files_and_csv_rows_reports_bad_inputs_on_their_row_and_imports_nothing_heavy(
        modality_project, tmp_path):
    from tasks.modality.registry import modality_for

    paths, params, _ = modality_project
    folder = tmp_path / "in"
    folder.mkdir()
    expected = INPUTS[modality_for(params.backbone).name](paths, folder)
    out = tmp_path / "out.json"
    probe = ("import sys, json; from tasks.runtime.predict import predict; "
             f"predict([{str(folder)!r}, {str(tmp_path / 'inputs.csv')!r}], model={str(paths.onnx)!r}, top_k=2, "
             f"out={str(out)!r}); print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=venv_env(),
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
    rows = json.loads(out.read_text())
    classes = paths.labels.read_text().split()
    assert len(rows) == len(list(folder.iterdir())) + 1  # every file and the CSV's row, none dropped
    by_name = {Path(r["path"]).name: r for r in rows}
    for name, label in expected.items():
        row = by_name[name]
        if label == "error":
            assert row["error"] and "label_1" not in row
            continue
        assert not row.get("error") and row["label_1"] in classes and row["prob_1"] >= row["prob_2"]
        assert label is None or row["label_1"] == label
