"""The params schema: every knob of every stage, its default and its description, validated on load.

This module is the single source of the defaults and their descriptions: `params.yaml` is generated from it
(`python -m tasks.core.params --write`: every key, each description as its comment; `--check` tells whether the file
is the generated one), and tests/test_params.py keeps the committed file equal to what it generates. DVC reads
params.yaml for the keys each stage lists, so the file spells out every key rather than only overrides.

`params.yaml` is parsed into `Params` (pydantic, `extra="forbid"`). A typo fails with one line naming the key and the
nearest valid key. CLI and flow parameters are dotted overrides of the same model (`head.C=0.1`); `write_overrides`
writes them into the file (comments kept), as `dvc exp run -S` does. One YAML library reads and writes it: ruamel.yaml,
with the safe loader DVC uses (YAML 1.2), so the stages see exactly the values DVC records.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML, YAMLError

from tasks.core.errors import UserError

PARAMS_FILE = "params.yaml"
DEFAULT_MAX_PIXELS = 40_000_000  # ingest.max_pixels' default, and the limit a client decoding for the model uses
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # ingest's default; predict's
TEXT_EXTENSIONS = (".txt", ".text")  # ingest's default for a text backbone; predict's


def safe_yaml() -> YAML:
    """ruamel.yaml's safe loader, as DVC reads params.yaml and dvc.yaml (YAML 1.2: plain dicts, lists, scalars)."""
    return YAML(typ="safe")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestParams(_Section):
    source: str = Field("data/raw", description="a folder (<class>/<files>) or a CSV (path,label[,split]; text also "
                                                "text,label[,split], the text inline), anywhere on disk")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="share of each class in the val split")
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="share of each class in the test split")
    group_pattern: str | None = Field(
        r"^(?P<group>.+?)(?:[_-]\d{1,2})?$",
        description="regex on the file stem: files whose stem gives the same `group` (per class) share a split, so "
                    "variants such as cat_01.png / cat_02.png never straddle train and test (a 1-2 digit suffix is a "
                    "variant; IMG_0001 stays its own group); null = every file is its own group",
    )
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, le=178_956_970,
                            description="larger images are rejected (decompression-bomb guard; at most 178956970, "
                                        "beyond which Pillow refuses)")
    max_file_bytes: int = Field(256 * 2**20, gt=0, description="larger files are rejected before they are read "
                                                               "(256 MiB)")
    extensions: list[str] | None = Field(
        None, description="file extensions a folder source is read for; null = the backbone's modality's: images "
                          f"{' '.join(IMAGE_EXTENSIONS)}; text {' '.join(TEXT_EXTENSIONS)}")
    workers: int = Field(2, ge=1, description="threads decoding images to validate them")
    max_text_bytes: int = Field(2**20, gt=0, description="text: larger texts (files or CSV cells) are rejected "
                                                         "(1 MiB)")
    text_encoding: str = Field("utf-8", description="text: the files' declared encoding; a byte-order mark overrides "
                                                    "it; a file that does not decode is rejected")

    @field_validator("text_encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r} (e.g. utf-8, cp1252, latin-1)") from None
        return v

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> "IngestParams":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 (something must be left to train on)")
        return self


class BackboneParams(_Section):
    name: str = Field("tf_efficientnet_lite0", description="catalog name, timm:<name> or torchvision:<name>; text: "
                                                           "minilm or hf:<local folder> (a BERT-family checkpoint)")
    weights: str = Field(
        "default",
        description="default (packaged; else an error) | package | random | file:<path> | hub[:<tag>] (internet)",
    )
    input_size: int = Field(224, ge=32, le=1024, description="images: pixels per side")
    resize: Literal["pad", "crop", "squash"] = Field(
        "pad", description="pad (letterbox on white) | crop (shorter side, centre crop) | squash (aspect ignored)"
    )
    layer: str | list[str] = Field(
        "pooled", description="pooled (penultimate) | a module name (e.g. blocks.4, layer3), average-pooled | a list "
                              "of them, e.g. [blocks.4, blocks.5, pooled]: each pooled, concatenated in that order")
    max_length: int = Field(256, ge=8, le=8192, description="text: tokens per text incl. [CLS]/[SEP]; longer texts "
                                                            "are truncated, [SEP] kept")
    pooling: Literal["mean", "cls"] = Field("mean", description="text: mean (attention-masked mean of the token "
                                                                "vectors, sentence-transformers' pooling) | cls (the "
                                                                "[CLS] vector)")

    @field_validator("layer")
    @classmethod
    def _one_or_more_distinct_layers(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("an empty list names no layer; use pooled")
            if len(set(v)) != len(v):
                raise ValueError(f"{v} names a layer twice")
            if len(v) == 1:
                return v[0]  # one layer in a list is that layer (and shares its feature cache)
        return v

    @field_validator("weights")
    @classmethod
    def _known_weights_source(cls, v: str) -> str:
        head = v.split(":", 1)[0]
        if head not in {"default", "package", "random", "file", "hub"}:
            raise ValueError(f"unknown weights source {v!r}; use default, package, random, file:<path> or hub[:<tag>]")
        return v


class FeaturesParams(_Section):
    engine: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="auto (ONNX Runtime on CPU, torch on CUDA) | torch | onnxruntime")
    batch_size: int = Field(32, ge=1, le=4096)
    shard_size: int = Field(4096, ge=1, description="rows per feature-store shard")
    threads: int = Field(0, ge=0, description="0 = all cores")
    decode_workers: int = Field(1, ge=0, description="decode/resize threads running one batch ahead of the model")


class MlpParams(_Section):
    hidden: int = Field(512, ge=1, description="width of the hidden layer")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    batch_size: int = Field(256, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(15, ge=1, description="stop after this many epochs without a better val accuracy")


class HeadParams(_Section):
    type: Literal["logreg", "linear_svm", "mlp"] = Field(
        "logreg", description="logreg | linear_svm (its probs are a softmax of margins, not calibrated) | mlp")
    C: float | Literal["auto"] = Field(
        0.1, description="inverse regularisation strength, or auto (stratified CV on train over C_grid)")
    C_grid: list[float] = Field(default_factory=lambda: [0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    cv_folds: int = Field(5, ge=2, le=20)
    class_weight: Literal["none", "balanced"] | dict[str, float] = Field(
        "none", description="none | balanced | {class: weight, ...} (missing classes weigh 1)")
    standardize: bool = Field(True, description="zero mean, unit variance features; folded into the exported linear "
                                                "layer")
    max_iter: int = Field(2000, ge=10, description="solver iterations (L-BFGS steps) before the fit stops "
                                                      "unconverged, with a warning")
    tol: float = Field(1e-4, gt=0.0, description="the fit has converged when no gradient component of the "
                                                  "per-sample objective exceeds this (scikit-learn's tol)")
    memory_mb: int = Field(256, ge=0, description="feature rows kept in memory between solver passes (the rest is "
                                                  "re-read in 32 MB chunks): memory is flat in the data's size")
    mlp: MlpParams = Field(default_factory=MlpParams, description="head.type=mlp: one hidden layer (torch), the "
                                                                  "epoch with the best val accuracy kept")

    @field_validator("C")
    @classmethod
    def _positive_c(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError("must be > 0 or auto")
        return v


class AugmentParams(_Section):
    crop_scale: float = Field(0.7, gt=0.0, le=1.0, description="random resized crop keeps at least this share of the "
                                                              "area (1 = off)")
    flip: bool = Field(True, description="random horizontal flip")
    color_jitter: float = Field(0.1, ge=0.0, le=1.0, description="brightness/contrast/saturation (0 = off)")


class FinetuneParams(_Section):
    strategy: Literal["none", "freeze", "last_n", "full", "gradual"] = Field(
        "none", description="none (ship the head) | freeze (head only, end to end) | last_n | full | gradual")
    last_n: int = Field(3, ge=1, description="blocks unfrozen from the top (last_n)")
    gradual_every: int = Field(1, ge=1, description="gradual: one more block every this many epochs")
    init: Literal["probe", "random"] = Field(
        "probe", description="probe: start from the trained head (LP-FT) | random: a fresh head")
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0, description="head peak learning rate")
    body_lr: float = Field(1e-4, gt=0.0, description="top block peak learning rate")
    layer_decay: float = Field(0.7, gt=0.0, le=1.0, description="each block further down trains at this times the "
                                                                "block above")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW; not on biases and norm weights")
    warmup_epochs: float = Field(0.5, ge=0.0, description="linear warm-up, then cosine decay to zero")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    bn: Literal["eval", "train"] = Field(
        "eval", description="eval: BatchNorm keeps its running statistics (frozen blocks always do) | train: "
                            "BatchNorm in unfrozen blocks updates them")
    augment: AugmentParams = Field(default_factory=AugmentParams)
    patience: int = Field(3, ge=1, description="stop after this many epochs without a better fine-tuned epoch")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (CUDA if present) | cpu | cuda")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="auto (bf16/fp16 on CUDA; on a CPU with AMX or AVX512-BF16, bf16 where a start-up "
                            "measurement finds it faster; else off) | off | bf16 (CUDA, or a CPU with AMX or "
                            "AVX512-BF16) | fp16 (CUDA)")
    nproc: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1, description="processes (torchrun, DDP): 1 = in this process | N | auto (one per GPU; 1 on CPU); "
                             "batch_size stays the global batch, each process takes batch_size / N")
    compile: bool = Field(False, description="torch.compile (slow first epoch; pays off on long runs)")
    threads: int = Field(0, ge=0, description="CPU threads; 0 = one per core (or OMP_NUM_THREADS when set); "
                                              "DataLoader-free: no workers competing")


class EvaluateParams(_Section):
    split: Literal["val", "test"] = "test"
    artifact: Literal["onnx", "head"] = Field(
        "onnx", description="onnx: score models/model.onnx through ONNX Runtime, as a server would | head: the head "
                            "on cached features (faster, no decoding)")
    cached_features: bool = Field(
        True, description="onnx: run the model's own head sub-graph on cached features when its backbone graph "
                          "provably made them (checked end to end on export.parity_images files); false: every file "
                          "through the whole graph")


class ExportParams(_Section):
    opset: int = Field(18, ge=13)
    parity_images: int = Field(40, ge=1, description="held-out images for the parity gates (batch 1, 7, 32) and "
                                                     "evaluate's end-to-end check")
    parity_tolerance: float = Field(1e-4, gt=0.0, description="max |p_onnx - p_torch| allowed")
    triton_name: str = Field("headstart", pattern=r"^[A-Za-z0-9_.-]+$",
                             description="the model's folder in the deploy repository: models/serving/triton/<name>/")
    triton_max_batch_size: int = Field(32, ge=1)
    int8: bool = Field(False, description="also build models/int8/model.onnx if it keeps its accuracy and pays on this "
                                          "CPU (images: static, calibrated on train images; texts: dynamic)")
    int8_calibration_images: int = Field(128, ge=8)
    int8_max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0, description="on val; a worse int8 model is not "
                                                                            "written")
    int8_min_speedup: float = Field(1.1, ge=0.0, description="int8 / fp32 speed at batch 32 on this CPU (paired "
                                                            "runs); a slower int8 model is not written")


class RetrainParams(_Section):
    metric: Literal["accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro"] = Field(
        "f1_macro", description="compared on the same current test split")
    margin: float = Field(0.0, ge=0.0, le=1.0, description="reject only a challenger worse than the champion by "
                          "more than this beyond the noise: the paired 95 % interval of (challenger - champion) "
                          "lies wholly below -margin (docs/retrain.md)")
    push: bool = Field(True, description="dvc push to the default remote after a retrain that changed something")

    @model_validator(mode="before")
    @classmethod
    def _tolerance_is_now_margin(cls, data):
        # issue 29: the gate compares paired intervals, not two points; an old params.yaml gets told what changed
        if isinstance(data, dict) and "tolerance" in data:
            raise ValueError("retrain.tolerance is now retrain.margin: the challenger is rejected only when the 95 % "
                             "interval of its difference from the champion lies below -margin (docs/retrain.md)")
        return data


class AuditParams(_Section):
    """Stage `audit` (tasks/audit.py, docs/data-quality.md): label issues and near-duplicates on cached features."""

    folds: int = Field(5, ge=2, le=20, description="label audit: out-of-fold probabilities from this many stratified "
                                                   "folds over train+val")
    C: float = Field(0.01, gt=0.0, description="label audit: the fold heads' inverse regularisation (logistic; its "
                                               "own key, so that a head.C change does not re-run the audit)")
    near_duplicate_cosine: float = Field(0.97, gt=0.0, le=1.0, description="two samples whose embeddings' cosine "
                                         "similarity is at least this are near-duplicates: reported, and kept in one "
                                         "split by the next ingest")


class DriftParams(_Section):
    """The retrain flow's drift check (tasks/data_quality/drift.py): new samples against the champion's training
    samples, MMD with a permutation test."""

    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="new samples have drifted when the test's p-value is "
                                                           "below this (the false-alarm rate)")
    permutations: int = Field(1000, ge=19, description="permutations of the test (p-value resolution 1/(this+1))")
    max_samples: int = Field(1000, ge=10, description="each side subsampled (seeded) to at most this many samples")
    holds_promotion: bool = Field(True, description="a retrain whose new samples drifted is held, not promoted "
                                                    "(false: promoted if the gate passes; the verdict still says)")


class Params(_Section):
    seed: int = Field(0, description="seeds the splits, random-init weights, head fitting and fine-tuning")
    ingest: IngestParams = Field(default_factory=IngestParams)
    backbone: BackboneParams = Field(default_factory=BackboneParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    head: HeadParams = Field(default_factory=HeadParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams, description="train backbone + head end to end, "
                                     "from the head above (LP-FT); README \"Fine-tune\"")
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    export: ExportParams = Field(default_factory=ExportParams)
    retrain: RetrainParams = Field(default_factory=RetrainParams, description="flows/retrain.py: scheduled "
                                   "retraining with a champion and a challenger")
    audit: AuditParams = Field(default_factory=AuditParams, description="stage audit: label issues and "
                               "near-duplicates (docs/data-quality.md)")
    drift: DriftParams = Field(default_factory=DriftParams, description="retrain: drift of the new samples "
                               "(docs/data-quality.md)")


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, dotted + "."))
    return keys


def _nearest(key: str, candidates: list[str]) -> str | None:
    by_lower = {c.lower(): c for c in candidates}
    if key.lower() in by_lower:
        return by_lower[key.lower()]
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:  # compare only the last component, within the same section
        section, _, leaf = key.rpartition(".")
        siblings = [c for c in candidates if c.rpartition(".")[0] == section]
        leaves = difflib.get_close_matches(leaf, [s.rpartition(".")[2] for s in siblings], n=1, cutoff=0.4)
        match = [f"{section}.{leaves[0]}" if section else leaves[0]] if leaves else []
    return match[0] if match else None


_UNION_BRANCHES = {"float", "int", "str", "bool", "list", "dict", "none"}


def _one_line(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    # union members add their type to the location (head.C.float): keep only the user's key path
    key = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and (p in _UNION_BRANCHES or "[" in p)))
    if err["type"] == "extra_forbidden":
        hint = _nearest(key, _valid_keys(Params))
        more = f" (did you mean '{hint}'?)" if hint else ""
        return f"{source}: unknown key '{key}'{more}"
    msg = err["msg"].removeprefix("Value error, ")
    got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
    return f"{source}: {key or 'top level'}: {msg}{got}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into (['a', 'b'], value) with the value parsed as YAML (so 0.1 is a float)."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like section.key=value (e.g. head.C=0.1)")
    key, raw = text.split("=", 1)
    try:
        value = safe_yaml().load(raw) if raw.strip() else None
    except YAMLError as exc:
        raise UserError(f"override '{text}': the value is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return key.strip().split("."), value


def _set_dotted(doc, overrides: list[str], convert=lambda value: value):
    """Apply dotted overrides in place to a nested mapping (a dict, or ruamel's commented map, with `convert` making
    each value one of its nodes); return it."""
    for text in overrides:
        path, value = parse_override(text)
        value = convert(value)
        node = doc
        for part in path[:-1]:
            if part not in node:
                node[part] = {}
            node = node[part]
            if not hasattr(node, "keys"):
                raise UserError(f"override '{text}': '{part}' is not a section")
        node[path[-1]] = value
    return doc


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of the raw params dict with dotted overrides applied (values parsed as YAML)."""
    return _set_dotted(copy.deepcopy(data or {}), overrides)


def validate(data: dict, source: str = PARAMS_FILE) -> Params:
    """Validate a raw dict into Params; any problem becomes a one-line UserError naming the key."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as exc:
        raise UserError(_one_line(exc, source)) from None


def read_raw(path: str | Path = PARAMS_FILE) -> dict:
    """The params file as a plain dict ({} if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = safe_yaml().load(path.read_text()) or {}
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Load and validate params.yaml (missing file = all defaults), with optional dotted overrides."""
    data = read_raw(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(data, f"{path} + -S overrides" if overrides else str(path))


def _flow_style(value: Any) -> Any:
    """Lists and mappings as ruamel nodes written on one line ([a, b], {k: v}), as the generated file writes them."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, (list, dict)):
        node = CommentedSeq(_flow_style(v) for v in value) if isinstance(value, list) else \
            CommentedMap((k, _flow_style(v)) for k, v in value.items())
        node.fa.set_flow_style()
        return node
    return value


def write_overrides(overrides: list[str], path: str | Path = PARAMS_FILE) -> Params:
    """Apply dotted overrides to the params file itself (comments kept), as `dvc exp run -S` does, so that
    dvc.lock records what was run. Validates before writing; the file is replaced atomically. A missing file is
    first generated from the schema (every key, described)."""
    import io

    from tasks.core.files import atomic_write_text

    params = load_params(path, overrides)
    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    # an override changes only its own line of the generated file: null stays `null` (ruamel writes nothing)
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(path.read_text() if path.exists() else params_yaml())
    if doc is None:
        from ruamel.yaml.comments import CommentedMap

        doc = CommentedMap()
    _set_dotted(doc, overrides, _flow_style)
    buf = io.StringIO()
    rt.dump(doc, buf)
    atomic_write_text(path, buf.getvalue())
    return params


# --- params.yaml, generated from the schema -----------------------------------------------------------------------

HEADER = (
    "# headstart parameters: one section per stage. Validated on load (a typo is an error naming the nearest key).\n"
    "# Change a value here, or per run: `dvc exp run -S head.C=0.3`, `headstart run -S head.C=0.3`.\n"
    "# Generated from the schema, tasks/core/params.py (defaults, descriptions): python -m tasks.core.params --write\n"
)
COMMENT_COLUMN = 30  # where a key's description starts; a longer `key: value` line has its description above it
WIDTH = 120


def _reads_back(text: str, value: Any, flow: bool) -> bool:
    try:
        return safe_yaml().load(f"[{text}]" if flow else f"k: {text}") == ([value] if flow else {"k": value})
    except YAMLError:
        return False


def _scalar(value: Any, flow: bool = False) -> str:
    """A value as YAML text that the safe loader (DVC's) reads back as exactly that value, in a block mapping (or,
    with `flow`, inside [...] / {...})."""
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v, flow=True) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k, True)}: {_scalar(v, True)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, str) and not _reads_back(text, value, flow):
        text = json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    if not _reads_back(text, value, flow):
        raise ValueError(f"cannot write {value!r} as YAML that reads back the same")
    return text


def _field_lines(name: str, field, value: Any, indent: str) -> list[str]:
    """`name: value` (or `name:` and its keys, for a section) with the field's description as its comment, wrapped at
    WIDTH: trailing, continued in the same column, or above the line when the line is long."""
    section = isinstance(value, BaseModel)
    line = f"{indent}{name}:" + ("" if section else f" {_scalar(value)}")
    out = [line]
    column = max(COMMENT_COLUMN, len(line) + 2)
    if field.description and column > COMMENT_COLUMN + 2:
        wrapped = textwrap.wrap(field.description, WIDTH - len(indent) - 2, break_on_hyphens=False)
        out = [f"{indent}# {w}" for w in wrapped] + [line]
    elif field.description:
        first, *more = textwrap.wrap(field.description, WIDTH - column - 2, break_on_hyphens=False)
        out = [line.ljust(column) + f"# {first}", *(" " * column + f"# {m}" for m in more)]
    if section:
        for sub, sub_field in type(value).model_fields.items():
            out += _field_lines(sub, sub_field, getattr(value, sub), indent + "  ")
    return out


def params_yaml(params: Params | None = None) -> str:
    """params.yaml for `params` (default: the schema's defaults): every key, each described as in the schema, a
    blank line between top-level entries."""
    params = params or Params()
    blocks = ["\n".join(_field_lines(name, field, getattr(params, name), "")) + "\n"
              for name, field in Params.model_fields.items()]
    return HEADER + "\n".join(blocks)


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.core.params",
                                 description="Generate params.yaml from the schema (every key, described).")
    ap.add_argument("--write", action="store_true", help=f"write {PARAMS_FILE} (the defaults)")
    ap.add_argument("--check", action="store_true", help=f"exit 1 unless {PARAMS_FILE} is the generated text")
    ap.add_argument("--file", type=Path, default=Path(PARAMS_FILE))
    args = ap.parse_args(argv)
    text = params_yaml()
    if args.write:
        from tasks.core.files import atomic_write_text

        atomic_write_text(args.file, text)
    elif args.check:
        if not args.file.exists() or args.file.read_text() != text:
            sys.exit(f"{args.file} is not what the schema generates: python -m tasks.core.params --write")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    _main()
