"""The named reference checkpoints and their suites: the one list of them, and where each is found.

    registry.names("imagenette")        # a suite's names, the WAE first (bench's order)
    registry.resolve("wae-resnet20")    # -> the checkpoint's path: checkout, cache or download

A suite is a tag. cifar10 and imagenette are trained checkpoints, published with each release;
paper names architectures (no file) that stand for untrained 224-pixel checkpoints, which
training.checkpoint.untrained_file makes when the paper suite is benched.

A name resolves to, in order:
  1. the source checkout's models/ (a wheel has none), used as it is: a checkpoint retrained
     there (make train-reference) is what a developer means to measure;
  2. <cache>/models/<file> ($WAE_CACHE, else ~/.cache/wae-deploy), if its SHA-256 matches;
  3. a download from $WAE_MODELS_URL, else RELEASE_URL, into that cache: written atomically and
     kept only when its SHA-256 matches the one recorded here.

    python -m wae_deploy.core.registry files --tag cifar10    # file names, for the Makefile
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wae_deploy.core import __version__, atomic
from wae_deploy.core.cache import cache_dir
from wae_deploy.core.errors import UserError
from wae_deploy.core.hashing import sha256

# Each release carries its checkpoints as assets; a mirror serves the same file names under its own base.
RELEASE_URL = f"https://github.com/wae-deploy/wae-deploy/releases/download/v{__version__}/"
URL_ENV = "WAE_MODELS_URL"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Reference:
    name: str
    family: str                 # the network its roles vary: resnet20, vgg16-imagenette, vgg16, resnet50
    role: str                   # wae, baseline, resized (half-side input), dwt (9/7 wavelet input), noenergy
    tags: tuple[str, ...]       # the suites it belongs to
    file: str | None = None     # None: an architecture name, no checkpoint to find
    sha256: str | None = None


def _trained(suite: str, family: str, sha: dict[str, str]) -> list[Reference]:
    """A trained family: the WAE, its full-resolution baseline, the resized and DWT inputs, the WAE without
    the energy loss; file names as `make train-reference` / `make train-imagenette` write them."""
    names = {"wae": f"wae-{family}", "baseline": family, "resized": f"{family}-resized", "dwt": f"{family}-dwt",
             "noenergy": f"wae-{family}-noenergy"}
    return [Reference(names[role], family, role, (suite,), f"{names[role]}.pt", digest) for role, digest in sha.items()]


REFERENCES: list[Reference] = [
    *_trained("cifar10", "resnet20", {
        "wae": "092a06df733d2107999adee47a4d539e7d2afebb4781c3aa65b406606c9bd84f",
        "baseline": "fcfd053f263385b5aa2a944172b2cd1a7e41c7c0f4a4578c247a01983c99ca9b",
        "resized": "28b2e7d77e568a5863986d1830c7472f1d8836ac41e1e60732db16e517d54e07",
        "dwt": "5a9847077216a15e2c6ecec1aa87bb328562c4aa91cf1ab70d004ff33db7ee22",
        "noenergy": "eda6b1990dc52c74190171b0a06aff3db41462f5d14d4852ba9ffcefb58244f4",
    }),
    *_trained("imagenette", "vgg16-imagenette", {
        "wae": "db64942c508f7ef5505d6171325f513776959c28a3007703292579105e0c997e",
        "baseline": "2349de1ed6be1ebbf69349e2bf7bdaa42bd9ba7245b778738744e0341182caf6",
        "resized": "3eecc378bc0c5ace060befc3799cea7cd03fc9d3e455dc348cb2fa09f01b845e",
        "dwt": "de84c66cc2ae496d9fbbe4adc0a29f9da5f0f961af822b45ba171e2d2666d5ad",
        "noenergy": "8130b0a08f7ae965282c7e757847183c8026dab200b7e7b17b370bfeff01fa1b",
    }),
    Reference("wae-vgg16", "vgg16", "wae", ("paper",)),
    Reference("vgg16", "vgg16", "baseline", ("paper",)),
    Reference("wae-resnet50", "resnet50", "wae", ("paper",)),
    Reference("resnet50", "resnet50", "baseline", ("paper",)),
]


def suites() -> list[str]:
    """Every tag, in the order first declared."""
    return list(dict.fromkeys(tag for r in REFERENCES for tag in r.tags))


def entries(tag: str | None = None, roles: tuple[str, ...] = ()) -> list[Reference]:
    return [r for r in REFERENCES if (tag is None or tag in r.tags) and (not roles or r.role in roles)]


def names(tag: str | None = None) -> list[str]:
    return [r.name for r in entries(tag)]


def get(name: str) -> Reference:
    for r in REFERENCES:
        if r.name == name:
            return r
    raise UserError(f"unknown reference model {name!r}; known: {', '.join(names())}")


def checkout_models() -> Path | None:
    """models/ of the source checkout this package runs from; None when installed (no pyproject.toml above)."""
    root = Path(__file__).resolve().parents[2]
    return root / "models" if (root / "pyproject.toml").is_file() and (root / "models").is_dir() else None


def models_cache() -> Path:
    return cache_dir() / "models"


def url_of(ref: Reference) -> str:
    base = os.environ.get(URL_ENV) or RELEASE_URL
    return base.rstrip("/") + "/" + ref.file


def resolve(name: str, log: Callable[[str], None] = lambda _line: None) -> Path:
    """The path of reference checkpoint `name`, downloaded into the cache when neither copy is at hand."""
    ref = get(name)
    if ref.file is None:
        raise UserError(f"{name} is an architecture (the {'/'.join(ref.tags)} suite), not a checkpoint to find")
    checkout = checkout_models()
    if checkout and (checkout / ref.file).is_file():
        return checkout / ref.file
    cached = models_cache() / ref.file
    if cached.is_file():
        if sha256(cached) == ref.sha256:
            return cached
        log(f"{cached} fails its SHA-256 check (a stale or damaged copy): downloading it again")
    return _download(ref, cached, log)


def _download(ref: Reference, dest: Path, log: Callable[[str], None]) -> Path:
    url = url_of(ref)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot use the cache folder {dest.parent} ({e.strerror or e}); "
                        "set WAE_CACHE to a writable folder") from e
    log(f"downloading {ref.name} from {url}")
    with atomic.atomic_path(dest) as tmp:  # a failed or refused download leaves nothing under dest's name
        digest = _fetch(url, tmp, ref.name)
        if digest != ref.sha256:
            raise UserError(f"{url} fails its SHA-256 check (got {digest[:16]}..., expected {ref.sha256[:16]}...); "
                            f"not keeping it: check {URL_ENV}")
    return dest


# What a failed download raises (urlopen's own, or a connection lost mid-file); a failed write to
# the cache is a plain OSError and reaches atomic_path, which reports the file it could not write.
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ValueError)


def _fetch(url: str, out: Path, name: str) -> str:
    """Stream `url` into `out`; its SHA-256 hex digest."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, open(out, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except _NETWORK_ERRORS as e:
        raise UserError(f"reference model {name} is neither in a checkout nor in the cache ({out.parent}) and cannot "
                        f"be downloaded from {url} ({_reason(e)}); set {URL_ENV} to a mirror (docs/models.md)") from e
    return digest.hexdigest()


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m wae_deploy.core.registry")
    parser.add_argument("what", choices=["files"], help="the checkpoint file names, space-separated")
    parser.add_argument("--tag", choices=suites())
    parser.add_argument("--role", action="append", default=[], help="repeatable: wae, baseline, resized, ...")
    args = parser.parse_args(argv)
    print(" ".join(r.file for r in entries(args.tag, tuple(args.role)) if r.file))


if __name__ == "__main__":
    main(sys.argv[1:])
