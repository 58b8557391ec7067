"""The CLI in a real process, forked from a warm parent instead of started cold.

A cold `wae-deploy` pays ~3 s of imports (torch, onnx, the exporter) before it reads its arguments,
and the suite starts dozens of them. Each pytest worker keeps one parent (`Forker`) that imported
those modules once and forks a child per call. The child is a process of its own: its own pid,
file descriptors, working folder, environment, `sys.argv` and exit status, and it runs the console
script's own code (`sys.exit(main())`), so an exit code, a traceback or a stray warning on stderr, or
a SIGKILL in the middle of a write is seen exactly as a user would see it. What the fork skips is
the imports and the exporter's first-call setup (one tiny export in the parent); the parent's own
stderr is kept and must stay empty (`check_quiet`), so an import-time warning still fails a test.
A call whose environment could change what those imports did (PYTHON*, TORCH*, LD_* variables)
runs cold instead.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# What the parent imports before forking: the modules a CLI call would otherwise import cold.
WARM = ("torch", "onnx", "onnxscript", "torch.onnx", "wae_deploy.cli", "wae_deploy.training.export",
        "wae_deploy.training.train")
CONSOLE_SCRIPT = "import sys\nfrom wae_deploy.cli import main\nsys.exit(main())\n"
COLD_PREFIXES = ("PYTHON", "TORCH", "LD_")

PARENT = r"""
import atexit, importlib, json, os, sys


def child(req):
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = req["argv"]
    try:
        exec(compile(req["code"], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        code = 0
    except SystemExit as e:  # as the interpreter does at exit
        code = e.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # What a normal exit runs (atexit handlers, flushed streams), without tearing down torch's modules
    # one by one: that alone took ~1 s a call.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code & 0xFF)


for name in sys.argv[1:]:
    importlib.import_module(name)
replies = os.fdopen(os.dup(1), "w", buffering=1)
requests = os.fdopen(os.dup(0), "r")
os.dup2(os.open(os.devnull, os.O_RDWR), 1)  # the parent prints nothing of its own but replies
if "wae_deploy.training.export" in sys.argv[1:]:
    # The exporter sets itself up on its first call (~3 s of torch.export's lazy state). After one tiny
    # export here, an export in a child costs what a user's second export in one process costs.
    import torch
    from wae_deploy.training.export import MIN_OPSET, to_onnx

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.norm(self.conv(x))).mean((2, 3)))

    to_onnx(Tiny().eval(), torch.zeros(2, 3, 8, 8), MIN_OPSET, None, ["logits"])
replies.write(json.dumps({"ready": os.getpid()}) + "\n")
for line in requests:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        replies.close()
        requests.close()
        child(json.loads(line))
    replies.write(json.dumps({"pid": pid}) + "\n")
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
"""


class Call:
    """One forked CLI process: `pid`, and `stdout_path` to read what it printed so far."""

    def __init__(self, forker: Forker, pid: int, args: list[str], out: Path, err: Path):
        self.forker, self.pid, self.args, self.stdout_path, self.stderr_path = forker, pid, args, out, err
        self.returncode: int | None = None

    def poll(self, timeout: float = 0.0) -> int | None:
        """The exit status (negative: the signal that ended it), or None while it runs."""
        if self.returncode is None:
            reply = self.forker.reply(timeout)
            if reply is not None:
                self.returncode = reply["returncode"]
        return self.returncode

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> subprocess.CompletedProcess:
        if self.poll(timeout) is None:  # past the timeout: killed, as subprocess.run does
            self.kill()
            self.poll(30)
            raise subprocess.TimeoutExpired(self.args, timeout, self.stdout(), self.stderr())
        return subprocess.CompletedProcess(self.args, self.returncode, self.stdout(), self.stderr())

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


class Forker:
    """The warm parent of one pytest worker; calls are made one at a time."""

    def __init__(self, env: dict[str, str]):
        self.folder = Path(tempfile.mkdtemp(prefix="wae-cli-"))
        self.parent_stderr = self.folder / "parent.stderr"
        with open(self.parent_stderr, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", PARENT, *WARM], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, env=env, text=True, bufsize=1)
        self.env_at_start = dict(env)
        self.calls = 0
        if self.reply(120) is None:
            raise RuntimeError(f"the CLI's warm parent did not start: {self.parent_stderr.read_text()}")

    def reply(self, timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                return None
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the CLI's warm parent died: {self.parent_stderr.read_text()[-2000:]}")
            return json.loads(line)

    def start(self, argv: list[str], code: str, cwd: Path | None, env: dict[str, str]) -> Call:
        if needs_cold(env, self.env_at_start):
            changed = sorted(k for k in set(env) | set(self.env_at_start) if env.get(k) != self.env_at_start.get(k))
            raise ValueError(f"this environment changes what the warm parent imported ({changed}): start the call cold")
        self.calls += 1
        out, err = self.folder / f"{self.calls}.stdout", self.folder / f"{self.calls}.stderr"
        req = {"argv": argv, "code": code, "cwd": str(cwd or os.getcwd()), "env": env,
               "stdout": str(out), "stderr": str(err)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return Call(self, self.reply(60)["pid"], argv[1:], out, err)

    def check_quiet(self) -> None:
        """What the imports printed: a cold process would have shown it on every call's stderr."""
        said = self.parent_stderr.read_text()
        assert not said, f"importing the CLI's modules printed on stderr: {said[-2000:]}"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


_forker: Forker | None = None


def forker(env: dict[str, str]) -> Forker:
    """This worker's warm parent, started on first use with `env` (the CLI's usual environment), and
    again when the worker's own environment has moved since in a variable imports may read: torch sets
    TORCHINDUCTOR_CACHE_DIR in the worker the first time its inductor loads."""
    global _forker
    if _forker is not None and _forker.proc.poll() is None and needs_cold(env, _forker.env_at_start):
        _forker.check_quiet()
        _forker.close()
        _forker = None
    if _forker is None or _forker.proc.poll() is not None:
        _forker = Forker(env)
        atexit.register(_forker.close)
    _forker.check_quiet()
    return _forker


def needs_cold(env: dict[str, str], base: dict[str, str]) -> bool:
    """True when `env` differs from the parent's `base` in a variable that imports may have read."""
    keys = {k for k in set(env) | set(base) if env.get(k) != base.get(k)}
    return any(k.startswith(COLD_PREFIXES) for k in keys)


def start(args: list, env: dict[str, str], cwd: Path | None = None, code: str = CONSOLE_SCRIPT,
          argv0: str = "wae-deploy") -> Call:
    """`code` (by default the console script) with sys.argv = [argv0, *args] in a process forked from the
    warm parent (started with `env` if it is not running yet; an `env` that needs_cold is refused)."""
    return forker(env).start([argv0, *map(str, args)], code, cwd, env)
