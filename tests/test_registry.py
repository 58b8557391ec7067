"""The reference-model registry: the one list of the suites, and a name resolved from the checkout, the
cache or a download (a real HTTP server on 127.0.0.1), verified by SHA-256, with one-line errors.

An installed wheel has no checkout above it: the tests that need one resolve with checkout_models()
returning None, and the command-line tests run a copy of the package laid out as a wheel installs it.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fixtures_small import REPO, assert_clean_error, cli_env

from wae_deploy.core import registry
from wae_deploy.core.errors import UserError
from wae_deploy.core.hashing import sha256

MODELS = REPO / "models"
NAME = "wae-resnet20"  # the smallest suite's first checkpoint
FILE = f"{NAME}.pt"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *_args):
        _Quiet.requests.append(self.path)


@pytest.fixture
def mirror(tmp_path):
    """A folder served over HTTP on 127.0.0.1: (folder, base URL, the paths requested)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    _Quiet.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/", _Quiet.requests
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache, no proxy for 127.0.0.1, and by default a server that refuses: nothing is fetched by accident."""
    monkeypatch.setenv("WAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WAE_MODELS_URL", f"http://127.0.0.1:{_closed_port()}/")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache" / "models"


@pytest.fixture
def installed(env, monkeypatch):
    """As from a wheel: no checkout's models/ to find."""
    monkeypatch.setattr(registry, "checkout_models", lambda: None)
    return env


def test_every_shipped_checkpoint_is_registered_with_its_sha256():
    # a retrained checkpoint must be registered anew, or a release would publish a file no install accepts
    shipped = {p.name: sha256(p) for p in MODELS.glob("*.pt")}
    registered = {r.file: r.sha256 for r in registry.REFERENCES if r.file}
    assert shipped == registered
    assert len(set(registry.names())) == len(registry.REFERENCES)


def test_the_registry_owns_the_suites():
    from wae_deploy.cli.bench import bench

    assert registry.suites() == ["cifar10", "imagenette", "paper"]
    suite_option = next(p for p in bench.params if p.name == "suite")
    assert list(suite_option.type.choices) == registry.suites()
    for tag in ("cifar10", "imagenette"):
        refs = registry.entries(tag)
        assert [r.role for r in refs][0] == "wae"  # bench's order: the WAE first, its baselines after it
        assert sorted(r.role for r in refs) == ["baseline", "dwt", "noenergy", "resized", "wae"]
        assert len({r.family for r in refs}) == 1 and all(r.file and r.sha256 for r in refs)
    paper = registry.entries("paper")
    assert registry.names("paper") == ["wae-vgg16", "vgg16", "wae-resnet50", "resnet50"]
    assert all(r.file is None for r in paper)  # architecture names: untrained checkpoints made by bench


def test_the_makefile_listing(capsys):
    registry.main(["files", "--tag", "imagenette", "--role", "wae", "--role", "baseline"])
    assert capsys.readouterr().out.split() == ["wae-vgg16-imagenette.pt", "vgg16-imagenette.pt"]
    registry.main(["files", "--tag", "cifar10"])
    assert capsys.readouterr().out.split() == [r.file for r in registry.entries("cifar10")]


def test_resolves_from_the_checkout_from_anywhere(env):
    for name in registry.names("cifar10") + registry.names("imagenette"):
        path = registry.resolve(name)
        assert path == MODELS / registry.get(name).file and path.is_absolute()
    assert not env.exists()  # nothing downloaded, nothing cached


def test_resolves_from_the_cache_without_the_network(installed):
    installed.mkdir(parents=True)
    shutil.copyfile(MODELS / FILE, installed / FILE)
    assert registry.resolve(NAME) == installed / FILE  # the server refuses: the cached copy is used


@pytest.mark.parametrize("slash", ["/", ""])
def test_downloads_verifies_and_caches(installed, mirror, monkeypatch, slash):
    folder, url, requests = mirror
    shutil.copyfile(MODELS / FILE, folder / FILE)
    monkeypatch.setenv("WAE_MODELS_URL", url.rstrip("/") + slash)
    lines = []
    path = registry.resolve(NAME, log=lines.append)
    assert path == installed / FILE and path.read_bytes() == (MODELS / FILE).read_bytes()
    assert lines == [f"downloading {NAME} from {url}{FILE}"]
    assert sorted(p.name for p in installed.iterdir()) == [FILE]  # no temporary file left beside it
    assert registry.resolve(NAME) == path and requests == [f"/{FILE}"]  # the second time from the cache


def test_a_file_url_mirror_serves_an_air_gapped_site(installed, tmp_path, monkeypatch):
    share = tmp_path / "share"
    share.mkdir()
    shutil.copyfile(MODELS / FILE, share / FILE)
    monkeypatch.setenv("WAE_MODELS_URL", share.as_uri())
    assert sha256(registry.resolve(NAME)) == registry.get(NAME).sha256


def test_a_damaged_cached_copy_is_downloaded_again(installed, mirror, monkeypatch):
    folder, url, _ = mirror
    shutil.copyfile(MODELS / FILE, folder / FILE)
    monkeypatch.setenv("WAE_MODELS_URL", url)
    installed.mkdir(parents=True)
    (installed / FILE).write_bytes(b"truncated")
    lines = []
    assert sha256(registry.resolve(NAME, log=lines.append)) == registry.get(NAME).sha256
    assert "fails its SHA-256 check" in lines[0] and lines[1].startswith("downloading")


def test_a_download_that_fails_its_sha256_is_deleted(installed, mirror, monkeypatch):
    folder, url, _ = mirror
    (folder / FILE).write_bytes(b"not the published checkpoint")
    monkeypatch.setenv("WAE_MODELS_URL", url)
    with pytest.raises(UserError) as e:
        registry.resolve(NAME)
    assert e.value.exit_code == 2 and "SHA-256" in str(e.value) and "\n" not in str(e.value)
    assert list(installed.iterdir()) == []  # neither the file nor a temporary one


def test_an_unknown_name_lists_the_known_ones(env):
    with pytest.raises(UserError) as e:
        registry.resolve("wae-resnet21")
    assert e.value.exit_code == 2 and "wae-resnet21" in str(e.value)
    assert all(name in str(e.value) for name in registry.names())


@pytest.mark.parametrize("server", ["refuses", "lacks the file"])
def test_no_reachable_source_is_one_line(installed, mirror, monkeypatch, server):
    if server == "lacks the file":
        monkeypatch.setenv("WAE_MODELS_URL", mirror[1])
    with pytest.raises(UserError) as e:
        registry.resolve(NAME)
    message = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in message
    assert NAME in message and "WAE_MODELS_URL" in message and ("404" in message) == (server == "lacks the file")
    assert not installed.exists() or list(installed.iterdir()) == []


# The command line, from a copy of the package as a wheel installs it (no pyproject.toml, no models/).

@pytest.fixture
def wheel_layout(tmp_path):
    site = tmp_path / "site-packages"
    shutil.copytree(REPO / "wae_deploy", site / "wae_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _bench(site: Path, cwd: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    # `python -m` with the copy on PYTHONPATH: the development install's console script would import the checkout
    args = ["bench", "--suite", "cifar10", "--target", "ort", "--workdir", str(cwd / "work"), *extra]
    env = cli_env(PYTHONPATH=str(site), WAE_CACHE=str(cwd / "cache"), WAE_MODELS_URL=url, no_proxy="127.0.0.1")
    return subprocess.run([sys.executable, "-m", "wae_deploy.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_downloads_the_suite_into_the_cache(wheel_layout, mirror, tmp_path):
    folder, url, _ = mirror
    for r in registry.entries("cifar10"):
        shutil.copyfile(MODELS / r.file, folder / r.file)
    # --batch 0 stops the run right after the suite is resolved: no export, no timing
    r = _bench(wheel_layout, tmp_path, url, "--batch", "0")
    assert_clean_error(r.returncode, r.stdout, r.stderr, match="batch sizes must be positive")
    assert r.stdout.count("downloading ") == 5
    cached = {p.name: sha256(p) for p in (tmp_path / "cache" / "models").iterdir()}
    assert cached == {r.file: r.sha256 for r in registry.entries("cifar10")}


def test_cli_refuses_a_download_that_fails_its_sha256(wheel_layout, mirror, tmp_path):
    folder, url, _ = mirror
    (folder / FILE).write_bytes(b"not the published checkpoint")
    r = _bench(wheel_layout, tmp_path, url)
    assert_clean_error(r.returncode, r.stdout, r.stderr, match="fails its SHA-256 check")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_cli_with_no_reachable_source(wheel_layout, tmp_path):
    r = _bench(wheel_layout, tmp_path, f"http://127.0.0.1:{_closed_port()}/")
    assert_clean_error(r.returncode, r.stdout, r.stderr, match="cannot be downloaded")
