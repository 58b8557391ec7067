"""The preprocessing spec: one definition read by training, calibration, export and benchmarks.

It travels inside the checkpoint and the ONNX metadata, so every stage feeds the network
exactly the pixels it was trained on.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from wae_deploy.core.errors import UserError

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

    @property
    def unit_std(self) -> tuple[float, float, float]:
        """The std in [0, 1] pixel units: a normalised difference times this is a [0, 1] difference."""
        return tuple(s / (255 * self.scale) for s in self.std)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        try:
            spec = cls(resize=int(d["resize"]), crop=int(d["crop"]), mean=tuple(map(float, d["mean"])),
                       std=tuple(map(float, d["std"])), channel_order=str(d.get("channel_order", "RGB")),
                       layout=str(d.get("layout", "NCHW")), scale=float(d.get("scale", 1 / 255)))
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
            raise UserError(f"invalid preprocessing spec: {e}") from e
        if not (0 < spec.crop <= spec.resize <= 16384) or len(spec.mean) != 3 or len(spec.std) != 3 \
                or not all(s > 0 for s in spec.std) or spec.channel_order not in ("RGB", "BGR"):
            raise UserError(f"invalid preprocessing spec: {spec}")
        return spec

    def load_image(self, path) -> np.ndarray:
        """Decode, resize and crop one file to a crop x crop x 3 uint8 array."""
        with self._decoding(path), Image.open(path) as im:
            return self._fit(im, path)

    def prepare(self, image) -> np.ndarray:
        """A PIL image or an H x W x 3 uint8 RGB array -> crop x crop x 3 uint8, as load_image does a file."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise UserError(f"an image array must be H x W x 3 uint8 (RGB), got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        elif not isinstance(image, Image.Image):
            raise UserError(f"not an image: {type(image).__name__} (give a path, a PIL image or a uint8 array)")
        with self._decoding("image"):
            return self._fit(image, "image")

    @contextlib.contextmanager
    def _decoding(self, where):
        """What PIL raises on bad bytes, and decompression bombs, become one UserError naming `where`."""
        too_large = UserError(f"image too large (over {MAX_IMAGE_PIXELS} pixels): {where}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # damaged files make PIL warn on stderr; the error says it
                # PIL only warns between 1x and 2x its limit; past our limit is refused, before decoding.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise too_large from e
        except UserError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                ZeroDivisionError, OverflowError, MemoryError) as e:  # what PIL's decoders raise on bad bytes
            raise UserError(f"unreadable image {where}: {type(e).__name__}: {str(e)[:200]}") from e

    def _fit(self, im: Image.Image, where) -> np.ndarray:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise UserError(f"image too large (over {MAX_IMAGE_PIXELS} pixels): {where}")
        if min(w, h) < 1:
            raise UserError(f"unreadable image {where}: it has no pixels ({w}x{h})")
        size = None
        if min(w, h) != self.resize:
            s = self.resize / min(w, h)
            size = (max(self.crop, round(w * s)), max(self.crop, round(h * s)))
            if size[0] * size[1] > MAX_IMAGE_PIXELS:  # a 1 x 10^7 strip would grow 32-fold
                raise UserError(f"image {where} ({w}x{h}) is too elongated to resize to "
                                f"{self.resize} pixels on its shorter side")
        im = im.convert("RGB")
        if size:
            im = im.resize(size, Image.BILINEAR)
        w, h = im.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        arr = np.asarray(im.crop((left, top, left + self.crop, top + self.crop)), dtype=np.uint8)
        return arr[..., ::-1] if self.channel_order == "BGR" else arr

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """N x H x W x 3 uint8 -> N x 3 x H x W float32, as the network expects."""
        x = images.astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


CIFAR = Preprocessing(resize=32, crop=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
IMAGENET = Preprocessing(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# Imagenette at 128 pixels: the ImageNet crop ratio (0.875) applied to a 146-pixel resize.
IMAGENETTE = Preprocessing(resize=146, crop=128, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# Caffe's test-time input for the authors' released WAE-VGG16: raw 0-255 pixels in BGR order,
# no mean, no scale (their prototxt's Data layer sets only crop_size 224).
CAFFE_RAW_BGR = Preprocessing(resize=256, crop=224, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                              channel_order="BGR", scale=1.0)
