"""The params schema: every knob of every stage, validated on load.

`params.yaml` is parsed into `Params` (pydantic, `extra="forbid"`). A typo fails with one line naming the key and the
nearest valid key. CLI and flow parameters are dotted overrides of the same model (`head.C=0.1`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.core.errors import UserError

PARAMS_FILE = "params.yaml"
DEFAULT_MAX_PIXELS = 40_000_000  # ingest.max_pixels' default, and the limit a client decoding for the model uses
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # ingest's default; predict's
TEXT_EXTENSIONS = (".txt", ".text")  # ingest's default for a text backbone; predict's


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestParams(_Section):
    source: str = Field("data/raw", description="a folder (<class>/<files>) or a CSV with path,label[,split] (text: "
                                                "text,label[,split] also, the text inline)")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    group_pattern: str | None = Field(
        r"^(?P<group>.+?)(?:[_-]\d{1,2})?$",
        description="regex on the file stem; files with the same match (per class) share a split. null = no grouping",
    )
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, le=178_956_970,
                            description="reject images with more pixels than this (Pillow refuses beyond 179 MP)")
    extensions: list[str] | None = Field(
        None, description="file extensions a folder source is read for; null = the backbone's modality's "
                          f"({' '.join(IMAGE_EXTENSIONS)} for images, {' '.join(TEXT_EXTENSIONS)} for text)")
    max_file_bytes: int = Field(256 * 2**20, gt=0, description="reject files larger than this before reading them")
    max_text_bytes: int = Field(2**20, gt=0, description="text: reject a text (file or CSV cell) larger than this")
    text_encoding: str = Field("utf-8", description="text: the files' declared encoding (a byte-order mark "
                                                    "overrides it); a file that does not decode is rejected")
    workers: int = Field(2, ge=1, description="threads decoding images to validate them")

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
    name: str = Field("tf_efficientnet_lite0", description="a catalog name, timm:<name> / torchvision:<name>, or "
                                                           "hf:<local folder> (a BERT-family text checkpoint)")
    weights: str = Field(
        "default",
        description="default (the catalog's source), package, random, file:<path>, or hub[:<tag>] (needs internet)",
    )
    input_size: int = Field(224, ge=32, le=1024, description="images: pixels per side")
    resize: Literal["pad", "crop", "squash"] = Field(
        "pad", description="pad: letterbox on white; crop: shorter side then centre crop; squash: ignore aspect"
    )
    layer: str | list[str] = Field(
        "pooled", description="pooled (penultimate layer), a module name (e.g. blocks.4 / layer3) whose output is "
                              "global-average-pooled, or a list of them, each pooled, concatenated in that order")
    max_length: int = Field(256, ge=8, le=8192, description="text: tokens per text including [CLS] and [SEP]; "
                                                            "longer texts are truncated (the final [SEP] kept)")
    pooling: Literal["mean", "cls"] = Field("mean", description="text: mean of the token vectors (attention-masked; "
                                                                "sentence-transformers' pooling) or the [CLS] vector")

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
    engine: Literal["auto", "torch", "onnxruntime"] = "auto"
    batch_size: int = Field(32, ge=1, le=4096)
    shard_size: int = Field(4096, ge=1, description="rows per feature-store shard file")
    threads: int = Field(0, ge=0, description="compute threads; 0 = all cores")
    decode_workers: int = Field(1, ge=0, description="threads decoding and resizing images beside the model")


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
        "logreg", description="logreg: calibrated probabilities; linear_svm: probs are a softmax of SVM margins; "
                              "mlp: one hidden layer (torch), early stopping on val")
    C: float | Literal["auto"] = Field(
        0.1, description="inverse regularisation strength, or auto: chosen by stratified CV on train over C_grid")
    C_grid: list[float] = Field(default_factory=lambda: [0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    cv_folds: int = Field(5, ge=2, le=20)
    class_weight: Literal["none", "balanced"] | dict[str, float] = Field(
        "none", description="none, balanced, or an explicit {class: weight} map (missing classes weigh 1)")
    standardize: bool = Field(True, description="scale features to zero mean / unit variance (folded into the layer)")
    max_iter: int = Field(2000, ge=10)
    mlp: MlpParams = Field(default_factory=MlpParams)

    @field_validator("C")
    @classmethod
    def _positive_c(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError("must be > 0 or auto")
        return v


class AugmentParams(_Section):
    crop_scale: float = Field(0.7, gt=0.0, le=1.0, description="random resized crop keeps this share of the area or "
                                                              "more (1 = no crop)")
    flip: bool = Field(True, description="random horizontal flip")
    color_jitter: float = Field(0.1, ge=0.0, le=1.0, description="brightness/contrast/saturation jitter (0 = off)")


class FinetuneParams(_Section):
    strategy: Literal["none", "freeze", "last_n", "full", "gradual"] = Field(
        "none", description="none: ship the head on frozen features; freeze: train the head end to end on pixels; "
                            "last_n: unfreeze the last `last_n` blocks; full: everything; gradual: unfreeze one more "
                            "block every `gradual_every` epochs, from the top")
    last_n: int = Field(3, ge=1, description="blocks unfrozen by last_n")
    gradual_every: int = Field(1, ge=1, description="epochs between unfreezing blocks (gradual)")
    init: Literal["probe", "random"] = Field(
        "probe", description="probe: start from the trained head (LP-FT); random: a fresh head")
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate of the head")
    body_lr: float = Field(1e-4, gt=0.0, description="peak learning rate of the top block")
    layer_decay: float = Field(0.7, gt=0.0, le=1.0, description="each block further from the head trains at this "
                                                                "times the learning rate of the block above")
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_epochs: float = Field(0.5, ge=0.0, description="linear warm-up, then cosine decay to zero")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    bn: Literal["eval", "train"] = Field(
        "eval", description="eval: every BatchNorm keeps its running statistics (frozen blocks always do); "
                            "train: BatchNorm in unfrozen blocks updates them")
    augment: AugmentParams = Field(default_factory=AugmentParams)
    patience: int = Field(3, ge=1, description="stop after this many epochs without a better fine-tuned epoch")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="auto: bf16 (else fp16) on CUDA, off on CPU")
    compile: bool = Field(False, description="torch.compile the model (slow first epoch; pays off on long runs)")
    threads: int = Field(0, ge=0, description="torch threads on CPU; 0 = one per physical core")


class EvaluateParams(_Section):
    split: Literal["val", "test"] = "test"
    artifact: Literal["onnx", "head"] = Field(
        "onnx", description="onnx: score the exported model through ONNX Runtime from the image files, as a server "
                            "would; head: score the head on cached features (faster, no decoding)")
    cached_features: bool = Field(
        True, description="onnx: when the model's own backbone graph provably computed the cached features, run its "
                          "head sub-graph on them, checked end to end on export.parity_images image files; false: "
                          "every image file through the whole graph")


class ExportParams(_Section):
    opset: int = Field(18, ge=13)
    parity_images: int = Field(40, ge=1, description="held-out images for every parity gate (batches 1, 7, 32) and "
                                                     "for evaluate's end-to-end check")
    parity_tolerance: float = Field(1e-4, gt=0.0)
    triton_name: str = Field("headstart", pattern=r"^[A-Za-z0-9_.-]+$")
    triton_max_batch_size: int = Field(32, ge=1)
    int8: bool = Field(False, description="also build a statically quantised int8 model (models/int8/)")
    int8_calibration_images: int = Field(128, ge=8)
    int8_max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0)


class RetrainParams(_Section):
    metric: Literal["accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro"] = Field(
        "f1_macro", description="challenger vs champion, on the same current test split")
    tolerance: float = Field(0.0, ge=0.0, le=1.0, description="promote unless the challenger is worse by more")
    push: bool = Field(True, description="dvc push after a retrain that changed something")


class Params(_Section):
    seed: int = 0
    ingest: IngestParams = Field(default_factory=IngestParams)
    backbone: BackboneParams = Field(default_factory=BackboneParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    head: HeadParams = Field(default_factory=HeadParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    export: ExportParams = Field(default_factory=ExportParams)
    retrain: RetrainParams = Field(default_factory=RetrainParams)


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
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def _set_dotted(doc, overrides: list[str]):
    """Apply dotted overrides in place to a nested mapping (a dict, or ruamel's commented map); return it."""
    for text in overrides:
        path, value = parse_override(text)
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
    return _set_dotted(yaml.safe_load(yaml.safe_dump(data)) or {}, overrides)


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
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Load and validate params.yaml (missing file = all defaults), with optional dotted overrides."""
    data = read_raw(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(data, f"{path} + -S overrides" if overrides else str(path))


def write_overrides(overrides: list[str], path: str | Path = PARAMS_FILE) -> Params:
    """Apply dotted overrides to the params file itself (comments kept), as `dvc exp run -S` does, so that
    dvc.lock records what was run. Validates before writing; the file is replaced atomically."""
    import io

    from ruamel.yaml import YAML

    from tasks.core.files import atomic_write_text

    params = load_params(path, overrides)
    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(path.read_text()) if path.exists() else None
    if doc is None:
        from ruamel.yaml.comments import CommentedMap

        doc = CommentedMap()
    _set_dotted(doc, overrides)
    buf = io.StringIO()
    rt.dump(doc, buf)
    atomic_write_text(path, buf.getvalue())
    return params
