"""Image decoding: validate a file, flatten transparency onto white, resize to the model's square input.

The resize here is the client-side half of the deployment contract: the exported ONNX graph takes uint8 RGB NHWC at
the model's input size and does scaling and normalisation itself, so training features and served predictions share
exactly this function for everything that happens before the graph.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from tasks.core.params import DEFAULT_MAX_PIXELS

# Our own pixel limit (ingest.max_pixels) is enforced from the header by every function here, before decoding;
# Pillow's process-wide bomb guard stays as Pillow sets it, for any other code in the process.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# What turns a file into the model's pixels. Bump DECODER_VERSION whenever a change here changes any decoded pixel:
# tests/test_decoder.py holds decoded reference images to their recorded sha256 per version, and fails when pixels
# change under an unchanged version. Feature and pixel caches are keyed by `decoder_identity()`, so a real change
# re-extracts, and a comment edit does not.
DECODER_VERSION = 1

WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of validating one file: its size, and a rejection reason ("" when it is usable)."""

    width: int = 0
    height: int = 0
    reason: str = ""


def _too_large(w: int, h: int, max_pixels: int) -> str:
    return f"too large: {w}x{h} = {w * h / 1e6:.0f} MP > limit {max_pixels / 1e6:.0f} MP (ingest.max_pixels)"


def _corrupt(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):  # over Pillow's own limit: refused before its header is used
        return f"too large: {str(exc).split(',')[0]} (ingest.max_pixels)"
    return f"truncated or corrupt ({str(exc).splitlines()[0][:120]})"


def check_image(source: str | Path | io.BytesIO, max_pixels: int) -> ImageCheck:
    """Fully decode `source` (a path or the file's bytes) to prove it is a readable image within the pixel limit.
    Never raises for bad files."""
    try:
        empty = source.getbuffer().nbytes == 0 if isinstance(source, io.BytesIO) else Path(source).stat().st_size == 0
        if empty:
            return ImageCheck(reason="empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as img:
                w, h = img.size
                if w * h > max_pixels:
                    return ImageCheck(w, h, _too_large(w, h, max_pixels))
                if w == 0 or h == 0:
                    return ImageCheck(w, h, "image has zero width or height")
                img.load()
        return ImageCheck(w, h)
    except UnidentifiedImageError:
        return ImageCheck(reason="not an image (format not recognised)")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return ImageCheck(reason=_corrupt(exc))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of `img`; any transparency (RGBA, LA, P with transparency) is composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = (arr / max(float(arr.max()), 1.0) * 255.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    return img.convert("RGB")


def resize_square(img: Image.Image, size: int, mode: str) -> Image.Image:
    """Resize an RGB image to size x size. pad: letterbox on white; crop: shorter side, centre crop; squash."""
    w, h = img.size
    if mode == "squash":
        return img.resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    if mode == "pad":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
        canvas = Image.new("RGB", (size, size), WHITE)
        canvas.paste(small, ((size - nw) // 2, (size - nh) // 2))
        return canvas
    if mode == "crop":
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        big = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        return big.crop((left, top, left + size, top + size))
    raise ValueError(f"unknown resize mode {mode!r}")


class TooLarge(ValueError):
    """An image over the pixel limit (found from its header, before anything is decoded)."""


def decoder_identity() -> str:
    """This decoder's version and the Pillow release it decodes with (both change pixels)."""
    import PIL

    return f"decoder-{DECODER_VERSION}/pillow-{PIL.__version__}"


def load_uint8(path: str | Path, size: int, mode: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `path` into a (size, size, 3) uint8 RGB array ready for the model (HWC). Every call enforces
    `max_pixels` from the header before decoding: `TooLarge` (a ValueError) for an image over it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise TooLarge(_too_large(w, h, max_pixels))
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # decode at reduced scale: far less work for big JPEGs
            rgb = to_rgb(img)
            out = resize_square(rgb, size, mode)
    return np.asarray(out, dtype=np.uint8)


def load_checked(path: str | Path, size: int, mode: str, max_pixels: int) -> tuple[np.ndarray | None, str]:
    """`load_uint8` for untrusted files, decoding once: (array, "") or (None, reason), never raising for bad files."""
    try:
        if Path(path).stat().st_size == 0:
            return None, "empty file (0 bytes)"
        return load_uint8(path, size, mode, max_pixels), ""
    except TooLarge as exc:
        return None, str(exc)
    except FileNotFoundError:
        return None, "file not found"
    except UnidentifiedImageError:
        return None, "not an image (format not recognised)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return None, _corrupt(exc)
