"""Build backbones from the catalog (tasks.model.backbone_catalog) with their weights, as feature extractors.

Weights that do not fit the architecture fail with one line naming the first mismatched tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tasks.core.errors import UserError
from tasks.core.files import sha256_file
from tasks.core.params import BackboneParams
from tasks.model.backbone_catalog import BackboneSpec, resolve_spec, weights_source


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
    kind, wfile, tag = weights_source(p, spec)
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
        weights_id = sha256_file(wfile)
    elif kind == "hub":
        weights_id = f"hub:{tag}"
    else:
        weights_id = f"random:{seed}"
    model.eval()
    blocks = _ordered_blocks(model, spec)
    if isinstance(p.layer, list):
        model = ConcatenatedLayers(model, p.layer).eval()
    elif p.layer != "pooled":
        model = IntermediateLayer(model, p.layer).eval()
    if p.layer != "pooled":
        with torch.inference_mode():
            feature_dim = int(model(torch.zeros(1, 3, 64, 64)).shape[1])
    return LoadedBackbone(model, spec, feature_dim, weights_id, blocks)


def _check_layer_names(model: nn.Module, layers: list[str]) -> None:
    names = [n for n, _ in model.named_modules() if n]
    for layer in layers:
        if layer != "pooled" and layer not in names:
            import difflib

            near = difflib.get_close_matches(layer, names, n=3)
            raise UserError(f"backbone.layer: '{layer}' is not a module of this backbone"
                            f"{' (did you mean ' + ', '.join(near) + '?)' if near else ''}")


def _pool(out: torch.Tensor) -> torch.Tensor:
    return out.mean(dim=(2, 3)) if out.dim() == 4 else out.flatten(1)


class ConcatenatedLayers(nn.Module):
    """Several layers' outputs, each global-average-pooled to (N, C_i), concatenated in the order named; "pooled"
    is the backbone's own pooled output. Forward hooks capture the intermediate outputs during the full forward pass,
    so the same module trains, extracts and exports (the ONNX graph holds the same concatenation)."""

    def __init__(self, model: nn.Module, layers: list[str]):
        super().__init__()
        _check_layer_names(model, layers)
        self.model, self.layers = model, list(layers)
        self._captured: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        for name in self.layers:
            if name != "pooled":
                modules[name].register_forward_hook(self._capture(name))

    def _capture(self, name: str):
        def hook(_module, _inputs, output):
            self._captured[name] = output
        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.model(x)
        parts = [pooled if name == "pooled" else _pool(self._captured.pop(name)) for name in self.layers]
        return torch.cat(parts, dim=1)


class IntermediateLayer(nn.Module):
    """The output of one named module, global-average-pooled to (N, C). The graph is cut there by FX (timm's
    feature extractor, which knows timm's untraceable layers), so later layers are not computed or exported."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        _check_layer_names(model, [layer])
        from timm.models._features_fx import create_feature_extractor

        self.layer = layer
        self.body = create_feature_extractor(model, {layer: layer})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pool(self.body(x)[self.layer])


def _ordered_blocks(model: nn.Module, spec: BackboneSpec) -> list[nn.Module]:
    """The backbone's stages in input-to-output order (what fine-tuning unfreezes from the end)."""
    if spec.blocks_attr == "layer":  # torchvision ResNets: layer1..layer4
        return [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
    container = getattr(model, spec.blocks_attr, None)
    if not isinstance(container, nn.Sequential):
        return []
    # parameterless layers (VGG's ReLU and max-pool between convolutions) are no block: unfreezing one trains nothing
    return [m for m in container if any(True for _ in m.parameters())]
