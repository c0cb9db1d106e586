"""Reference host-side preprocessing of encoded images, for the streaming path.

Train: Inception-style random-resized crop (area fraction in ``scale``, aspect
ratio log-uniform in ``ratio``, 10 tries, else a centre crop of the nearest
allowed ratio: torchvision's rule) resized to the train resolution, then a
horizontal flip with probability 1/2. Eval: resize the shorter side to
``size / crop_fraction`` and take the centre ``size x size`` crop. Both give
uint8 HWC RGB; standardisation and the dtype cast happen on the device.

JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, ``Image.draft``)
whenever the region that is kept still has at least the output's resolution:
decoding a 500 px photograph for a 64 px crop costs a fraction of a full decode.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np

from scaling.errors import UserError


@dataclasses.dataclass(frozen=True)
class CropConfig:
    """How train and eval images are cropped (see the module docstring)."""

    train_size: int
    eval_size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    crop_fraction: float = 0.875  # eval: centre crop / resized shorter side
    augment: bool = True  # False: train images get the eval view (at the train size), no randomness

    def __post_init__(self):
        lo, hi = self.scale
        if not (0 < lo <= hi <= 1):
            raise UserError(f"crop scale must satisfy 0 < min <= max <= 1, got {lo}-{hi}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise UserError(f"crop aspect ratio range must be positive and ordered, got {self.ratio}")
        if not (0 < self.crop_fraction <= 1):
            raise UserError(f"eval crop fraction must be in (0, 1], got {self.crop_fraction}")
        for name in ("train_size", "eval_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', ' ')} must be at least 1 pixel, got {getattr(self, name)}")


def open_image(data: bytes, name: str = "image"):
    """A lazily decoded PIL image; a file PIL cannot read is a UserError naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot decode image {name}: {e}") from None


def _load_rgb(im, name: str, box=None, target=None):
    """Decode ``im`` (reduced-scale for JPEG when allowed) and return (RGB image, box scaled)."""
    try:
        if target is not None and im.format == "JPEG":
            w0, h0 = im.size
            bw, bh = box[2] - box[0], box[3] - box[1]
            # smallest scale at which the kept region still has >= target pixels
            im.draft("RGB", (math.ceil(w0 * target[0] / bw), math.ceil(h0 * target[1] / bh)))
            sx, sy = im.size[0] / w0, im.size[1] / h0
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        im.load()
        if im.mode != "RGB":
            im = im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # truncated / corrupt data
        raise UserError(f"cannot decode image {name}: {e}") from None
    return im, box


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
    """Full-resolution uint8 HWC RGB."""
    im, _ = _load_rgb(open_image(data, name), name)
    return np.asarray(im, dtype=np.uint8)


def random_resized_box(width: int, height: int, rng: np.random.Generator, scale, ratio) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of an Inception-style random crop of a ``width x height`` image."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    in_ratio = width / height  # fallback: centre crop at the nearest allowed aspect ratio
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_view(data: bytes, cfg: CropConfig, rng: np.random.Generator, name: str = "image") -> np.ndarray:
    """Random-resized crop + flip at ``cfg.train_size``: uint8 (S, S, 3) (the
    centre view at that size when ``cfg.augment`` is off)."""
    from PIL import Image

    if not cfg.augment:
        return centre_view(data, cfg.train_size, cfg.crop_fraction, name)
    im = open_image(data, name)
    box = random_resized_box(*im.size, rng, cfg.scale, cfg.ratio)
    flip = cfg.flip and rng.random() < 0.5
    s = cfg.train_size
    im, box = _load_rgb(im, name, box, (s, s))
    out = im.resize((s, s), Image.BILINEAR, box=box, reducing_gap=None)
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


def eval_view(data: bytes, cfg: CropConfig, name: str = "image") -> np.ndarray:
    """Resize (shorter side to ``eval_size / crop_fraction``) + centre crop: uint8 (S, S, 3)."""
    return centre_view(data, cfg.eval_size, cfg.crop_fraction, name)


def centre_view(data: bytes, s: int, crop_fraction: float, name: str = "image") -> np.ndarray:
    """Resize the shorter side to ``s / crop_fraction``, keep the centre ``s x s``: uint8 (s, s, 3)."""
    from PIL import Image

    im = open_image(data, name)
    w, h = im.size
    short = max(s, round(s / crop_fraction))
    scale = short / min(w, h)  # the resized image is (w*scale, h*scale); keep its centre s x s
    cw, ch = s / scale, s / scale
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    im, box = _load_rgb(im, name, box, (s, s))
    return np.asarray(im.resize((s, s), Image.BILINEAR, box=box, reducing_gap=None), dtype=np.uint8)
