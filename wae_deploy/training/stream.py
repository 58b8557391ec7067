"""Streaming ImageNet-layout data: files are listed once and decoded on the fly in DataLoader workers.

For data sets that do not fit in memory (ImageNet's 1.28 M photos); CIFAR-10 and Imagenette keep
the faster decode-once path of data.py. Layouts:

    root/train/<class>/*.JPEG    one folder per class (WNIDs); classes.txt may name them
    root/val/<class>/*.JPEG      the same classes
    root/val/*.JPEG              or flat, with root/val_labels.txt: "<file name> <class folder>" lines

Train images get a random-resized crop (area share 0.25-1, aspect ratio 3/4-4/3, as the
in-memory photo path) to the model's crop size and a horizontal flip; evaluation images are
resized and centre-cropped as the model's preprocessing spec says. Each image's random numbers
come from (seed, epoch, index), so the crops depend neither on the number of workers nor of ranks.

Memory: the file list (a path and a label per image) and the workers' prefetched batches;
the pixels are never held beyond a batch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wae_deploy.core.errors import UserError
from wae_deploy.runtime.data import IMAGE_SUFFIXES, _class_names, class_folders, image_files
from wae_deploy.runtime.preprocess import Preprocessing

VAL_LABELS = "val_labels.txt"
CROP_SCALE, CROP_RATIO = (0.25, 1.0), (3 / 4, 4 / 3)


@dataclass
class FileList:
    files: list[str]
    labels: np.ndarray   # int64, one per file
    classes: list[str]   # readable names, in label order

    def __len__(self) -> int:
        return len(self.files)


def is_imagenet_layout(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def count_images(folder: Path) -> int:
    """Images in folder's class folders or directly in it, listed without opening any."""
    n = 0
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir() and not e.name.startswith("."):
                n += len(image_files(e.path))
            elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                n += 1
    return n


def list_split(root: str | os.PathLike, split: str) -> FileList:
    """The files and labels of "train" or "test" (read from val/) of an ImageNet-layout root."""
    root = Path(root)
    if not is_imagenet_layout(root):
        raise UserError(f"--stream needs an ImageNet layout: {root}/train/<class>/ and {root}/val/")
    wnids = class_folders(root / "train")
    if not wnids:
        raise UserError(f"no class folders in {root / 'train'}")
    index = {w: i for i, w in enumerate(wnids)}
    files, labels = [], []
    folder = root / ("train" if split == "train" else "val")
    if split == "train" or class_folders(folder):
        for w in (wnids if split == "train" else class_folders(folder)):
            if w not in index:
                raise UserError(f"{folder / w}: a class that {root / 'train'} does not have")
            found = image_files(folder / w)
            if not found:
                raise UserError(f"empty class folder: {folder / w} (no images)")
            files += found
            labels += [index[w]] * len(found)
    else:
        files, labels = _flat_val(root, folder, index)
    return FileList(files, np.asarray(labels, np.int64), _class_names(root, wnids))


def _flat_val(root: Path, folder: Path, index: dict[str, int]) -> tuple[list[str], list[int]]:
    path = root / VAL_LABELS
    if not path.is_file():
        raise UserError(f"{folder} has no class folders and {path} is missing ('<file> <class>' lines)")
    present = set(image_files(folder))
    files, labels = [], []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"unreadable {path} ({type(e).__name__})") from e
    for n, line in enumerate(lines, 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != 2:
            raise UserError(f"{path} line {n}: expected '<file> <class>', got {line.strip()[:80]!r}")
        name, wnid = parts
        if wnid not in index:
            raise UserError(f"{path} line {n} names an unknown class {wnid!r} (not a folder of train/)")
        file = str(folder / name)
        if file not in present:
            raise UserError(f"{path} line {n} names a missing image {name!r}")
        files.append(file)
        labels.append(index[wnid])
    if not files:
        raise UserError(f"{path} lists no images")
    return files, labels


class StreamSet:
    """A map-style dataset of (crop x crop x 3 uint8 array or None where decoding failed, label, path)."""

    def __init__(self, data: FileList, spec: Preprocessing, train: bool, seed: int = 0):
        self.data, self.spec, self.train, self.seed = data, spec, train, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        path = self.data.files[i]
        try:
            image = self.random_crop(path, i) if self.train else self.spec.load_image(path)
        except UserError:
            image = None
        return image, int(self.data.labels[i]), path

    def random_crop(self, path: str, i: int) -> np.ndarray:
        spec, size = self.spec, self.spec.crop
        rng = np.random.default_rng((self.seed, self.epoch, i))
        area, log_r = rng.uniform(*CROP_SCALE), rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1]))
        fx, fy, flip = rng.random(), rng.random(), rng.random() < 0.5
        with spec._decoding(path), Image.open(path) as im:
            w, h = im.size
            cw = min(w, round(np.sqrt(area * w * h * np.exp(log_r))))
            ch = min(h, round(np.sqrt(area * w * h / np.exp(log_r))))
            im.draft("RGB", (max(1, size * w // cw), max(1, size * h // ch)))  # JPEG: decode at a reduced scale
            sx, sy = im.size[0] / w, im.size[1] / h
            left, top = fx * (w - cw) * sx, fy * (h - ch) * sy
            out = im.convert("RGB").resize((size, size), Image.BILINEAR,
                                           box=(left, top, left + cw * sx, top + ch * sy))
        if flip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(out, dtype=np.uint8)
        return arr[..., ::-1] if spec.channel_order == "BGR" else arr


def collate(items):
    """(N x 3 x H x W uint8 tensor of the images that decoded, their labels, the paths that did not)."""
    import torch
    good = [(img, y) for img, y, _ in items if img is not None]
    bad = [p for img, _, p in items if img is None]
    if not good:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), bad
    x = torch.from_numpy(np.stack([g[0] for g in good])).permute(0, 3, 1, 2)
    return x, torch.tensor([g[1] for g in good]), bad


class BadImages:
    """Counts undecodable images: a warning for each, a UserError past `limit`."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0

    def __call__(self, paths: list[str]) -> None:
        for p in paths:
            self.count += 1
            if self.count > self.limit:
                raise UserError(f"more than {self.limit} images failed to decode (the last: {p}); "
                                "raise --max-bad-images or fix the data")
            print(f"warning: skipped an image that failed to decode ({self.count} of at most {self.limit}): {p}",
                  file=sys.stderr)


def loader(dataset: StreamSet, batches, workers: int):
    """A DataLoader over `batches` (lists of indices: this rank's slice of each global batch)."""
    from torch.utils.data import DataLoader
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate)


def eval_batches(data: FileList, spec: Preprocessing, batch: int, workers: int, bad: BadImages) -> Iterator:
    """(uint8 batch, labels) of a whole split in order, decoded by `workers` processes."""
    ds = StreamSet(data, spec, train=False)
    for x, y, failed in loader(ds, [list(range(i, min(i + batch, len(ds)))) for i in range(0, len(ds), batch)],
                               workers):
        bad(failed)
        if len(y):
            yield x, y.numpy()
