"""The CI workflows in .github/workflows: actionlint finds nothing, and the jobs run the bench gate.

actionlint (from the dev extra) checks the syntax, expressions, action inputs (those of the
reusable jetson.yml too) and, where shellcheck is installed, the shell scripts. The tests below it
read the jobs' shell scripts and check what they run: the CPU workflow exports the suite's ONNX
models and hands them to the Jetson job as an artifact, the Jetson job benches them on TensorRT
without torch against its recorded baseline with JUnit output, the CPU jobs bench ONNX Runtime and
OpenVINO, and every bench option they pass exists in the CLI. The files are read with a small
reader for the block layout these two workflows use (jobs at two spaces, steps at six), so no
YAML library is needed; a layout it does not recognise fails the tests rather than passing them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
CPU = WORKFLOWS / "cpu.yml"
JETSON = WORKFLOWS / "jetson.yml"

# Custom labels of the self-hosted runners; actionlint rejects labels it does not know.
SELF_HOSTED_LABELS = ["jetson", "wae-bench"]


# ----------------------------------------------------------------------------- actionlint

def actionlint_binary() -> str | None:
    """The actionlint of this venv (beside the interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / ("actionlint.exe" if os.name == "nt" else "actionlint")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("actionlint")


def run_actionlint(*files: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    binary = actionlint_binary()
    if binary is None:
        pytest.skip("actionlint is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    config = tmp_path / "actionlint.yaml"
    config.write_text("self-hosted-runner:\n  labels:\n" + "".join(f"    - {label}\n" for label in SELF_HOSTED_LABELS))
    return subprocess.run([binary, "-no-color", "-config-file", str(config), *map(str, files)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_actionlint_finds_nothing(tmp_path):
    result = run_actionlint(CPU, JETSON, tmp_path=tmp_path)
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not findings, f"actionlint exit {result.returncode}:\n{findings}"


def test_actionlint_does_catch_errors(tmp_path):
    """The check above is not vacuous: a broken workflow fails with a finding."""
    broken = tmp_path / "broken.yml"
    broken.write_text(textwrap.dedent("""\
        on: push
        jobs:
          x:
            runs-on: ubuntu-latest
            steps:
              - run: echo "${{ github.no_such_property.x }}"
              - uses: actions/checkout@v4
                with:
                  no-such-input: 1
        """))
    result = run_actionlint(broken, tmp_path=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no-such-input" in result.stdout


# ----------------------------------------------------------------------------- reading the jobs

def top_level_keys(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_][\w-]*):", text, re.MULTILINE)}


def jobs(path: Path) -> dict[str, str]:
    """{job id: the job's text}, from the two-space-indented keys under the top-level 'jobs:'."""
    lines = path.read_text().splitlines()
    assert "jobs:" in lines, f"{path.name}: no top-level 'jobs:'"
    found: dict[str, list[str]] = {}
    current = None
    for line in lines[lines.index("jobs:") + 1:]:
        if line and not line[0].isspace() and not line.startswith("#"):
            break  # the next top-level key
        m = re.match(r"^  ([A-Za-z_][\w-]*):\s*$", line)
        if m:
            current = m.group(1)
            found[current] = []
        elif current is not None:
            found[current].append(line)
    assert found, f"{path.name}: no jobs found"
    return {name: "\n".join(body) for name, body in found.items()}


def steps(job: str) -> list[str]:
    """The job's steps, each as its text (a step starts with '- ' at six spaces)."""
    parts = re.split(r"^      - ", job, flags=re.MULTILINE)
    assert len(parts) > 1, "no steps at six spaces"
    return parts[1:]


def scalar(job: str, key: str) -> str | None:
    """A job-level key's value on its own line (four spaces), e.g. runs-on or timeout-minutes."""
    m = re.search(rf"^    {re.escape(key)}:[ \t]*(.+)$", job, re.MULTILINE)
    return m.group(1).strip() if m else None


def run_scripts(job: str) -> list[str]:
    """The shell script of every step with run:, inline or a '|' block, continuations joined
    (none for a job that calls a reusable workflow)."""
    if scalar(job, "uses"):
        return []
    scripts = []
    for step in steps(job):
        lines = step.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)run:\s*(.*)$", line if i else "        " + line)
            if not m:
                continue
            indent, value = len(m.group(1)), m.group(2)
            if value in ("|", "|-", ">-", ">"):
                body = []
                for nxt in lines[i + 1:]:
                    if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                    body.append(nxt)
                value = textwrap.dedent("\n".join(body))
            scripts.append(re.sub(r"\\\n\s*", " ", value))
    return scripts


def commands(job: str, prefix: str) -> list[list[str]]:
    """Every command line of the job's scripts that runs `prefix`, split into words."""
    found = []
    for script in run_scripts(job):
        for line in script.splitlines():
            if prefix in line and not line.lstrip().startswith("#"):
                found.append(shlex.split(line[line.index(prefix):], comments=True))
    return found


def option_values(words: list[str], option: str) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == option]


def labels(job: str) -> list[str]:
    value = scalar(job, "runs-on") or ""
    return [v.strip() for v in value.strip("[]").split(",")]


def uploads_always(job: str) -> bool:
    uploads = [s for s in steps(job) if "uses: actions/upload-artifact@v4" in s]
    return bool(uploads) and all(re.search(r"^\s*if: always\(\)\s*$", s, re.MULTILINE) for s in uploads)


def bench_options() -> set[str]:
    from wae_deploy.cli.bench import bench
    from wae_deploy.cli.doctor import doctor

    return {opt for command in (bench, doctor) for p in command.params for opt in p.opts}


def check_known_options(words: list[str]):
    known = bench_options()
    unknown = [w for w in words if w.startswith("--") and w not in known]
    assert not unknown, f"options the CLI does not have: {unknown} in {' '.join(words)}"


# ----------------------------------------------------------------------------- the Jetson job

def step_with(job: str, action: str) -> str:
    (step,) = [s for s in steps(job) if f"uses: {action}" in s]
    return step


def test_cpu_workflow_exports_the_onnx_models_and_hands_them_to_the_jetson_job():
    all_jobs = jobs(CPU)
    export = all_jobs["export-onnx"]
    assert labels(export) == ["ubuntu-latest"] and "make install" in run_scripts(export)
    script = "\n".join(run_scripts(export))
    assert "wae_deploy.core.registry files --tag cifar10" in script   # the suite bench --suite cifar10 times
    (exported,) = commands(export, "wae-deploy export")
    assert option_values(exported, "--out") == ["onnx/${ckpt%.pt}.onnx"]
    upload = step_with(export, "actions/upload-artifact@v4")
    assert re.search(r"^\s*name: suite-onnx$", upload, re.MULTILINE) and "path: onnx/" in upload
    assert "if-no-files-found: error" in upload

    caller = all_jobs["jetson"]
    assert scalar(caller, "needs") == "export-onnx" and scalar(caller, "uses") == "./.github/workflows/jetson.yml"
    assert re.search(r"^      onnx_artifact: suite-onnx$", caller, re.MULTILINE)
    assert "vars.JETSON_RUNNER == 'true'" in caller and "head.repo.full_name == github.repository" in caller
    assert "github.ref == 'refs/heads/main'" in caller                  # pushes: main only, as before


def test_jetson_job_benches_the_onnx_models_on_trt_without_torch():
    text = JETSON.read_text()
    assert {"on", "jobs"} <= top_level_keys(text)
    assert re.search(r"^  workflow_call:\n    inputs:\n      onnx_artifact:", text, re.MULTILINE)
    (job,) = jobs(JETSON).values()
    assert labels(job) == ["self-hosted", "linux", "ARM64", "jetson"]
    assert scalar(job, "timeout-minutes") and int(scalar(job, "timeout-minutes")) > 0
    assert re.search(r"^    concurrency:\n      group: jetson-device\n      cancel-in-progress: false", job,
                     re.MULTILINE)  # one device: runs queue

    download = step_with(job, "actions/download-artifact@v4")
    assert "name: ${{ inputs.onnx_artifact }}" in download and "path: onnx" in download
    script = "\n".join(run_scripts(job))
    assert "sudo -n nvpmodel -q" in script and "sudo -n jetson_clocks --show" in script
    assert "python3 -m venv --system-site-packages .venv" in script   # JetPack's TensorRT and pycuda
    assert "pip install -e '.[plot]'" in script
    assert "torch" not in script and "[train" not in script           # the device side needs none

    (doctor,) = commands(job, "wae-deploy doctor")
    assert option_values(doctor, "--target") == ["trt"]
    (bench,) = commands(job, "wae-deploy bench")
    assert option_values(bench, "--target") == ["trt"]
    assert option_values(bench, "--models") == ["${models%,}"] and "models=$(printf '%s,' onnx/*.onnx)" in script
    assert option_values(bench, "--data") == ["$EVAL_DATA"] and "default_data_root()" in script  # scored
    assert option_values(bench, "--compare") == ["benchmarks/jetson-orin.json"]
    assert option_values(bench, "--junit") and option_values(bench, "--markdown") and option_values(bench, "--out")
    assert "--allow-env-mismatch" not in bench and "--allow-throttled" not in bench  # a real gate
    order = ["download" if "download-artifact" in st else "bench" for st in steps(job)
             if "download-artifact" in st or "wae-deploy bench" in st]
    assert order == ["download", "bench"]
    assert script.index("wae-deploy doctor") < script.index("wae-deploy bench")
    check_known_options(doctor)
    check_known_options(bench)
    assert uploads_always(job)


# ----------------------------------------------------------------------------- the CPU jobs

def test_cpu_test_job_runs_make_test_on_python_311():
    text = CPU.read_text()
    assert re.search(r"^  push:", text, re.MULTILINE) and re.search(r"^  pull_request:", text, re.MULTILINE)
    job = jobs(CPU)["test"]
    assert labels(job) == ["ubuntu-latest"]
    assert re.search(r'python-version: "3\.11"', job)
    assert "make test" in run_scripts(job)
    assert "path: ~/.cache/wae-deploy" in job and "uses: actions/cache@v4" in job


def test_cpu_bench_jobs_bench_ort_and_openvino():
    all_jobs = jobs(CPU)
    benches = {name: job for name, job in all_jobs.items() if commands(job, "wae-deploy bench")}
    assert set(benches) == {"bench", "bench-gate"}
    for name, job in benches.items():
        assert "needs: test" in job, name
        assert "make install" in run_scripts(job), name
        (doctor,) = commands(job, "wae-deploy doctor")
        assert option_values(doctor, "--target") == ["ort", "openvino"], name
        (bench,) = commands(job, "wae-deploy bench")
        assert option_values(bench, "--target") == ["ort", "openvino"], name
        assert option_values(bench, "--suite") == ["cifar10"] and option_values(bench, "--eval-size") == ["2000"]
        for option in ("--junit", "--markdown", "--plot", "--out"):
            assert option_values(bench, option), (name, option)
        check_known_options(doctor)
        check_known_options(bench)
        assert uploads_always(job), name

    # Hosted runners are other machines than the recorded one: there the gate only informs.
    hosted = "\n".join(run_scripts(benches["bench"]))
    assert labels(benches["bench"]) == ["ubuntu-latest"]
    assert "--compare benchmarks/ci-cpu.json --allow-env-mismatch" in hosted
    assert "informational" in CPU.read_text().split("jobs:")[0].lower()
    # The real gate: the self-hosted runner that recorded the baseline, no mismatch allowed.
    gate = benches["bench-gate"]
    assert labels(gate) == ["self-hosted", "linux", "x64", "wae-bench"]
    (bench,) = commands(gate, "wae-deploy bench")
    assert option_values(bench, "--compare") == ["benchmarks/ci-cpu.json"]
    assert "--allow-env-mismatch" not in bench


# ----------------------------------------------------------------------------- the history and its publication

@pytest.mark.parametrize("path, job_id", [(CPU, "bench-gate"), (JETSON, "trt-bench")])
def test_device_jobs_keep_a_history_and_publish_it(path, job_id):
    """The stable machines append to their history, draw the trend page and publish both of
    github-action-benchmark's files (the names `wae-deploy report` writes)."""
    from wae_deploy.benchmark.action_benchmark import BIGGER, SMALLER
    from wae_deploy.cli.report import report

    job = jobs(path)[job_id]
    (bench,) = commands(job, "wae-deploy bench")
    (history,) = option_values(bench, "--history")
    (page,) = commands(job, "wae-deploy report")
    assert page[2] == history and option_values(page, "-o") == ["reports/site"]
    assert set(page[3:]) <= {o for p in report.params for o in p.opts} | {"reports/site"}
    assert "contents: write" in job  # the action pushes to gh-pages
    published = {}
    for step in steps(job):
        if "uses: benchmark-action/github-action-benchmark@v1" in step:
            tool = re.search(r"tool: (\S+)", step).group(1)
            published[tool] = re.search(r"output-file-path: (\S+)", step).group(1)
            assert "env.MAIN_PUSH == 'true'" in step and "auto-push: true" in step
    assert published == {"customBiggerIsBetter": f"reports/site/{BIGGER}",
                         "customSmallerIsBetter": f"reports/site/{SMALLER}"}
