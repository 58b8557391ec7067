"""Image data sets: ImageFolder trees, the CIFAR-10 python archive, and labelled CSV folders.

Everything is decoded once into a uint8 N x H x W x 3 array (cached on disk) through the
model's preprocessing spec, so training, calibration and evaluation see the same pixels.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wae_deploy.core import atomic
from wae_deploy.core.cache import cache_dir
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.preprocess import CIFAR, IMAGENETTE, Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
MAX_CIFAR_MEMBER = 128 * 1024 * 1024
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class ImageSet:
    images: np.ndarray       # N x H x W x 3 uint8, already resized and cropped
    labels: np.ndarray       # N int64
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> ImageSet:
        return ImageSet(self.images[idx], self.labels[idx], self.classes)

    def sample(self, n: int, seed: int = 0, skip: int = 0) -> ImageSet:
        """A deterministic random sample of n images (all of them if n >= len), in file order.

        `skip` draws on past the first `skip` images of the same seed's draw, so sample(a, s) and
        sample(b, s, skip=a) never share an image (calibration and held-out photos).
        """
        if n >= len(self) and not skip:
            return self
        return self.subset(np.sort(np.random.default_rng(seed).permutation(len(self))[skip:skip + n]))


# The data set each bundled spec was made for; any other spec defaults to the ImageNet photos.
DATASET_OF_SPEC = {CIFAR: "cifar10", IMAGENETTE: "imagenette-160"}


def default_data_root(spec: Preprocessing | None = None) -> Path:
    """The data set when --data is not given.

    $WAE_DATA, else the spec's data set (cifar10, imagenette-160 or imagenet-val1300) under
    ../shared/data beside the checkout or the working directory, else CIFAR-10 or Imagenette
    is downloaded and checked. ImageNet cannot be downloaded: 224-pixel models need --data.
    """
    if os.environ.get("WAE_DATA"):
        return Path(os.environ["WAE_DATA"])
    name = DATASET_OF_SPEC.get(spec or CIFAR, "imagenet-val1300")
    repo = Path(__file__).resolve().parents[2]   # wae_deploy/runtime/data.py -> the checkout
    for candidate in (repo.parent / "shared/data" / name, Path.cwd().parent / "shared/data" / name):
        if candidate.is_dir():
            return candidate
    if name == "cifar10":
        return download_cifar10(cache_dir() / "cifar10")
    if name == "imagenette-160":
        from wae_deploy.runtime.imagenette import download_imagenette
        return download_imagenette(cache_dir() / "imagenette-160")
    raise UserError(f"no {name} folder found for {spec.crop}-pixel images; pass --data DIR")


def download_cifar10(dest: Path) -> Path:
    """Fetch the CIFAR-10 python archive once and verify its MD5 (the checksum its authors publish)."""
    archive = dest / "cifar-10-python.tar.gz"
    if not archive.exists():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(CIFAR10_URL, timeout=60) as r:
                data = r.read()
        except OSError as e:
            raise UserError(f"no data set given and CIFAR-10 cannot be downloaded ({e}); pass --data DIR") from e
        if hashlib.md5(data).hexdigest() != CIFAR10_MD5:
            raise UserError("downloaded CIFAR-10 archive fails its MD5 check; not using it")
        atomic.write_bytes(archive, data)
    return dest


class _CifarUnpickler(pickle.Unpickler):
    """The archive is pickled dicts of numpy arrays: allow those and nothing that runs code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_archive(archive: Path, split: str) -> ImageSet:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    try:
        with tarfile.open(archive) as tar:
            # Members are only read into memory by their base name, never extracted: names with
            # '../' or absolute paths, links and devices cannot make it write anything.
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in names:
                if members[name].size > MAX_CIFAR_MEMBER:  # a real batch is 31 MB; refuse a gzip bomb
                    raise UserError(f"not a valid CIFAR-10 python archive: {archive} "
                                    f"({name} claims {members[name].size} bytes)")
                batch = _CifarUnpickler(io.BytesIO(tar.extractfile(members[name]).read()), encoding="bytes").load()
                images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.extend(int(v) for v in batch[b"labels"])
            if sum(len(i) for i in images) != len(labels):
                raise ValueError("images and labels differ in number")
    except (KeyError, OSError, tarfile.TarError, pickle.UnpicklingError, EOFError, TypeError, ValueError,
            IndexError, AttributeError, MemoryError, zlib.error) as e:
        why = " ".join(str(e).split())[:300]  # tarfile's messages span several lines
        raise UserError(f"not a valid CIFAR-10 python archive: {archive} ({type(e).__name__}: {why})") from e
    return ImageSet(np.ascontiguousarray(np.concatenate(images)), np.asarray(labels, np.int64), CIFAR10_CLASSES)


def image_files(folder: str | os.PathLike) -> list[str]:
    """The image files directly in `folder`, sorted. scandir: a file's type comes with its name, so
    listing 50,000 files costs no stat each (the cache key below stats them once)."""
    with os.scandir(folder) as it:
        return sorted(e.path for e in it if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file())


def class_folders(folder: str | os.PathLike) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _list_imagefolder(folder: Path, root: Path) -> tuple[list[str], list[int], list[str]]:
    classes = class_folders(folder)
    files, labels = [], []
    for i, c in enumerate(classes):
        found = image_files(folder / c)
        files += found
        labels += [i] * len(found)
    return files, labels, _class_names(root, classes)


def _class_names(root: Path, folders: list[str]) -> list[str]:
    """Readable names from root/classes.txt ("<folder><TAB><name>" lines) where it has them, else the folders."""
    path = root / "classes.txt"
    if not path.is_file():
        return folders
    try:
        pairs = dict(line.split("\t", 1) for line in path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"malformed {path}: expected '<folder><TAB><name>' lines ({type(e).__name__})") from e
    return [pairs.get(f, f).strip() or f for f in folders]


def _list_labelled_csv(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    files, labels, names = [], [], {}
    try:
        with open(folder / "labels.csv", newline="") as f:
            for row in csv.DictReader(f):
                files.append(folder / row["file"])
                labels.append(int(row["class_index"]))
                if labels[-1] < 0:
                    raise ValueError(f"negative class_index {labels[-1]}")
                names[labels[-1]] = row.get("name", "")
                if not files[-1].is_file():
                    raise UserError(f"labels.csv in {folder} names a missing file: {row['file']}")
    except (KeyError, ValueError, TypeError, OSError, csv.Error) as e:
        raise UserError(f"malformed labels.csv in {folder}: {e}") from e
    classes = [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]
    return files, labels, classes


def _decode(files: list[str | Path], labels: list[int], classes: list[str], spec: Preprocessing) -> ImageSet:
    images = np.empty((len(files), spec.crop, spec.crop, 3), np.uint8)
    for i, f in enumerate(files):
        images[i] = spec.load_image(f)
    return ImageSet(images, np.asarray(labels, np.int64), classes)


def _cache_key(files: list[str | Path], classes: list[str], spec: Preprocessing, split: str) -> str:
    h = hashlib.sha256(repr((split, spec.resize, spec.crop, spec.channel_order, classes)).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def load_split(root: str | os.PathLike, split: str, spec: Preprocessing, use_cache: bool = True) -> ImageSet:
    """Read `split` ("train" or "test") of the data set at `root`.

    Layouts: an ImageFolder tree (root/<split>/<class>/*.jpg, with val/ standing for test/ as
    in ImageNet and Imagenette, or root/<class>/*.jpg as a single split), a folder with
    labels.csv (file,class_index), or the CIFAR-10 python archive
    (root/cifar-10-python.tar.gz, or the .tar.gz file itself).
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder does not exist: {root}")
    archive = root if root.is_file() else root / "cifar-10-python.tar.gz"
    if archive.is_file():
        return _read_cifar_archive(archive, split)
    if (root / "labels.csv").is_file():
        files, labels, classes = _list_labelled_csv(root)
    else:
        named = [root / s for s in ((split, "val") if split == "test" else (split,)) if (root / s).is_dir()]
        files, labels, classes = _list_imagefolder(named[0] if named else root, root)
    if not files:
        raise UserError(f"no images found in {root} (expected {split}/<class>/*.jpg or labels.csv)")
    if not use_cache:
        return _decode(files, labels, classes, spec)
    path = cache_dir() / "decoded" / f"{_cache_key(files, classes, spec, split)}.npz"
    try:  # before decoding: a cache that cannot be written fails now, not after minutes of work
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot use the cache folder {cache_dir()} ({e.strerror or e}); "
                        "set WAE_CACHE to a writable folder") from e
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return ImageSet(z["images"], z["labels"], [str(c) for c in z["classes"]])
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged cache entry is rebuilt below
    data = _decode(files, labels, classes, spec)
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=data.images, labels=data.labels, classes=np.asarray(data.classes))
    return data
