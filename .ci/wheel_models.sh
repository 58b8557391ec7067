#!/usr/bin/env bash
# The reference models from an installed wheel (#23): a wheel built from this checkout is installed
# into a fresh venv outside it (base install: no torch) and run from an empty folder, so the only
# way to the checkpoints is the registry's download: from a local mirror of models/ named by
# WAE_MODELS_URL, checked by SHA-256. Bench then stops at the export (torch) with its one-line
# install hint: resolving the suite is what this checks. Last, with nothing cached and no reachable
# source: one `error:` line and exit 2. About a minute (pip fetches the base dependencies from PyPI).
#
#   .ci/wheel_models.sh [python3]
set -euo pipefail
python=${1:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server"; rm -rf "$work"' EXIT
fail() { echo "wheel check FAILED: $*" >&2; exit 1; }

"$python" -m venv "$work/venv"
bin=$work/venv/bin
# From a copy of what the wheel is made of: an in-tree build would leave build/lib in the checkout,
# whose stale modules a later build packages again.
mkdir "$work/src"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/wae_deploy" "$work/src/"
"$bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$work/dist" "$work/src"
"$bin/pip" install -q --disable-pip-version-check "$work"/dist/wae_deploy-*.whl
echo "installed $(basename "$work"/dist/wae_deploy-*.whl) into $bin"
"$bin/python" -c "import torch" 2>/dev/null && fail "the base install pulled in torch"

mkdir "$work/mirror" "$work/empty"
cp "$repo"/models/*.pt "$work/mirror/"
port=$("$bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$bin/python" -m http.server --bind 127.0.0.1 --directory "$work/mirror" "$port" >/dev/null 2>&1 &
server=$!
for _ in $(seq 50); do "$bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/')" \
  2>/dev/null && break; sleep 0.1; done

cd "$work/empty"
export WAE_CACHE=$work/cache no_proxy=127.0.0.1
run() {  # the command, its output and its exit status, as a user sees them
  echo "\$ $*"
  set +e; out=$("$@" 2>&1); rc=$?; set -e
  echo "$out"; echo "(exit $rc)"
}
bench=("$bin/wae-deploy" bench --suite imagenette --target ort --precision fp32 --batch 1 --min-time 0.1 --eval-size 8)

run env WAE_MODELS_URL="http://127.0.0.1:$port/" "${bench[@]}"
[ "$rc" = 2 ] && [[ "$out" == *"error: this command needs torch"* ]] || fail "expected the torch hint and exit 2"
[ "$(grep -c '^downloading ' <<<"$out")" = 5 ] || fail "expected five downloads"
"$bin/python" - <<'EOF' || fail "the cache does not hold the imagenette suite, verified"
from wae_deploy.core import registry
from wae_deploy.core.hashing import sha256
for r in registry.entries("imagenette"):
    path = registry.models_cache() / r.file
    assert sha256(path) == r.sha256, path
    print(f"cached and verified: {path}")
EOF

run env WAE_MODELS_URL="http://127.0.0.1:$port/" "${bench[@]}"  # again: from the cache, nothing downloaded
[ "$rc" = 2 ] && ! grep -q '^downloading ' <<<"$out" || fail "expected the cached copies to be used"

rm -rf "$WAE_CACHE"
kill "$server"; wait "$server" 2>/dev/null || true; server=
run env WAE_MODELS_URL="http://127.0.0.1:$port/" "${bench[@]}"
[ "$rc" = 2 ] && [ "$(grep -c '^error:' <<<"$out")" = 1 ] && [[ "$out" == *"cannot be downloaded"* ]] \
  && [[ "$out" != *Traceback* ]] || fail "expected one error line and exit 2 with no reachable source"
echo "wheel check passed"
