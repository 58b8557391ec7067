"""Imagenette (fast.ai's ten easy ImageNet classes): download and check the official 160-pixel release.

Used only where no copy is at hand (--data, $WAE_DATA and ../shared/data come first). The
archive is checked against its published SHA-256 and unpacked member by member into a
temporary folder that is renamed into place, so an interrupted download leaves nothing
that looks like a data set.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

from wae_deploy.core.errors import UserError

URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
SHA256 = "88daccb09b6fce93f45e6c09ddeb269cce705549e6bff322092a2a5a11489863"
TOP = "imagenette2-160"
# The archive names classes by WNID only; the readable names, written as classes.txt.
CLASSES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
           "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
           "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
           "n03888257": "parachute"}


def download_imagenette(dest: Path, url: str = URL, sha256: str = SHA256) -> Path:
    """dest/imagenette2-160 with train/ and val/ and classes.txt, downloaded once."""
    root = dest / TOP
    if (root / "train").is_dir() and (root / "val").is_dir():
        return root
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive.tgz"
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(archive, "wb") as f:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    digest.update(chunk)
                    f.write(chunk)
        except OSError as e:
            raise UserError(f"no Imagenette copy found and it cannot be downloaded ({e}); pass --data DIR") from e
        if digest.hexdigest() != sha256:
            raise UserError("downloaded Imagenette archive fails its SHA-256 check "
                            f"(got {digest.hexdigest()[:16]}...); not using it")
        unpacked = Path(tmp) / TOP
        extract(archive, unpacked)
        (unpacked / "classes.txt").write_text("".join(f"{w}\t{n}\n" for w, n in CLASSES.items()))
        shutil.rmtree(root, ignore_errors=True)
        unpacked.rename(root)
    return root


def extract(archive: Path, out: Path) -> None:
    """Unpack the JPEGs under <TOP>/{train,val}/<wnid>/ only: no links, devices or paths outside."""
    try:
        with tarfile.open(archive) as tar:
            for m in tar:
                parts = PurePosixPath(m.name).parts
                if not m.isfile() or len(parts) != 4 or parts[0] != TOP or parts[1] not in ("train", "val") \
                        or any(p in ("", ".", "..") for p in parts):
                    continue
                target = out.joinpath(*parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise UserError(f"not a valid Imagenette archive: {archive} ({type(e).__name__}: {e})") from e
    if not (out / "train").is_dir() or not (out / "val").is_dir():
        raise UserError(f"not a valid Imagenette archive: {archive} (no {TOP}/train and {TOP}/val folders)")
