"""The preprocessing spec: one definition read by training, calibration, export and benchmarks.

It travels inside the checkpoint and the ONNX metadata, so every stage feeds the network
exactly the pixels it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .errors import UserError

# A decompression bomb is refused before decoding: no image we handle needs more pixels.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class Preprocessing:
    resize: int            # shorter side is resized to this (bilinear) ...
    crop: int              # ... then centre-cropped to crop x crop: the network's input size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1 / 255  # uint8 pixels are multiplied by this before mean/std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        try:
            return cls(resize=int(d["resize"]), crop=int(d["crop"]), mean=tuple(map(float, d["mean"])),
                       std=tuple(map(float, d["std"])), channel_order=str(d.get("channel_order", "RGB")),
                       layout=str(d.get("layout", "NCHW")), scale=float(d.get("scale", 1 / 255)))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"invalid preprocessing spec: {e}") from e

    def load_image(self, path) -> np.ndarray:
        """Decode, resize and crop one file to a crop x crop x 3 uint8 array."""
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                if min(w, h) != self.resize:
                    s = self.resize / min(w, h)
                    im = im.resize((max(self.crop, round(w * s)), max(self.crop, round(h * s))),
                                   Image.BILINEAR)
                w, h = im.size
                left, top = (w - self.crop) // 2, (h - self.crop) // 2
                im = im.crop((left, top, left + self.crop, top + self.crop))
                arr = np.asarray(im, dtype=np.uint8)
        except Image.DecompressionBombError as e:
            raise UserError(f"image too large (over {MAX_IMAGE_PIXELS} pixels): {path}") from e
        except (OSError, SyntaxError, ValueError) as e:
            raise UserError(f"unreadable image {path}: {e}") from e
        if self.channel_order == "BGR":
            arr = arr[..., ::-1]
        return arr

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """N x H x W x 3 uint8 -> N x 3 x H x W float32, as the network expects."""
        x = images.astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


CIFAR = Preprocessing(resize=32, crop=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
IMAGENET = Preprocessing(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
