"""`wae-deploy bench`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wae_deploy.cli.options import command_line, csv_of
from wae_deploy.core import registry
from wae_deploy.core.errors import UserError

SCENARIOS = ("offline", "singlestream")  # benchmark.loadgen.SCENARIOS, without importing it for every command


@click.command()
@click.option("--target", "targets", multiple=True, required=True, help="ort, openvino, trt, torch (repeatable).")
@click.option("--models", callback=csv_of(str), help="Checkpoints, ONNX models or artifact folders, comma-separated "
              "[default: the --suite's]. An artifact runs on its own target and precision.")
@click.option("--suite", type=click.Choice(registry.suites()), default="cifar10", show_default=True,
              help="cifar10 / imagenette: the reference checkpoints; paper: untrained 224-pixel VGG16/ResNet-50 "
              "(speed only; checkpoints among --models are scored too).")
@click.option("--precision", "precisions", callback=csv_of(str),
              help="Comma-separated [default: all the target builds].")
@click.option("--batch", "batches", callback=csv_of(int), default="1,8", show_default=True)
@click.option("--data", type=click.Path(), help="Evaluation images [default: a checkpoint's test split; ONNX "
              "models and artifacts are timed on synthetic input, without accuracy].")
@click.option("--eval-size", type=int, help="Evaluate on a sample of this many images [default: all].")
@click.option("--calib-size", default=300, show_default=True)
@click.option("--workdir", type=click.Path(), default="build/bench", show_default=True)
@click.option("--threads", type=int, help="Runtime threads [default: all cores].")
@click.option("--min-time", default=3.0, show_default=True,
              help="Seconds of timing per target/precision/batch (and per peak kernel, up to 1).")
@click.option("--out", type=click.Path(), help="Results JSON.")
@click.option("--markdown", type=click.Path(), help="Markdown report.")
@click.option("--plot", type=click.Path(), help="PNG: top-1 against latency.")
@click.option("--junit", type=click.Path(), help="JUnit XML for CI.")
@click.option("--history", type=click.Path(), help="Folder of past runs: add this one as a new file, with its commit "
              "(see `wae-deploy report`).")
@click.option("--compare", "recorded", type=click.Path(), help="Recorded results to gate against.")
@click.option("--max-accuracy-drop", type=float, help="Top-1 points [default: from the recorded noise].")
@click.option("--max-slowdown", type=float, help="Fraction, 0.1 = 10% [default: from the recorded noise].")
@click.option("--allow-env-mismatch", is_flag=True, help="Compare results from another environment anyway.")
@click.option("--allow-throttled", is_flag=True, help="Compare cells timed while the clocks sagged or a trip "
              "point was reached.")
@click.option("--idle-time", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds of idle power measured before timing, taken off the energy figures (with a meter).")
@click.option("--update", is_flag=True, help="Write this run as the new recorded baseline (--compare's file).")
@click.option("--min-accuracy-fraction", type=click.FloatRange(0, 1), default=0.99, show_default=True,
              help="The gate also requires each INT8 top-1 to be at least this fraction of the same model's FP32 "
              "top-1 in this run (MLPerf's bar; 0: off).")
@click.option("--profile", "profile_runs", is_flag=False, flag_value=10, default=0, type=click.IntRange(0),
              metavar="[RUNS]", help="Also record each runtime's per-layer profile (10 runs unless given).")
@click.option("--scenario", type=click.Choice(sorted(SCENARIOS)), help="Run each model as an MLPerf LoadGen system "
              "under test instead (one --target, one --precision [default: fp32]; Offline calls the largest --batch); "
              "see docs/mlperf.md.")
@click.option("--mlperf-rules", is_flag=True, help="With --scenario: the official durations (600 s and the minimum "
              "query counts) [default: a short run of --min-time, reported as not official-length].")
@click.option("--audit", "audit_names", multiple=True, type=click.Choice(["test01", "test04"]),
              help="With --scenario: also run this compliance audit (repeatable).")
@click.option("--loadgen-logs", type=click.Path(), help="With --scenario: the folder for LoadGen's own logs "
              "[default: beside --out, named after it with -loadgen; else WORKDIR/loadgen].")
def bench(targets, models, suite, precisions, batches, data, eval_size, calib_size, workdir, threads, min_time,
          out, markdown, plot, junit, history, recorded, max_accuracy_drop, max_slowdown, allow_env_mismatch,
          allow_throttled, idle_time, update, min_accuracy_fraction, profile_runs, scenario, mlperf_rules,
          audit_names, loadgen_logs):
    """Measure accuracy and interleaved latency of WAE models against their baselines; gate on regressions.

    Checkpoints are exported and built in --workdir for each --target; ONNX models are built there too;
    artifact folders run as they are on their own target.
    """
    from wae_deploy.benchmark import gate
    from wae_deploy.benchmark.history import check_folder as check_history_folder
    from wae_deploy.benchmark.results import load as load_results
    from wae_deploy.benchmark.sources import suite_models
    from wae_deploy.benchmark.suite import BenchConfig, run

    if scenario is None and (mlperf_rules or audit_names or loadgen_logs):
        raise UserError("--mlperf-rules, --audit and --loadgen-logs go with --scenario")
    harness_only = {"--compare": recorded, "--update": update, "--plot": plot, "--junit": junit,
                    "--profile": profile_runs, "--history": history}
    if scenario and any(harness_only.values()):
        raise UserError(f"{', '.join(k for k, v in harness_only.items() if v)} cannot be used with --scenario "
                        "(it writes --out and --markdown)")
    previous = load_results(recorded) if recorded and not update else None  # a bad file fails before any work
    if history:
        check_history_folder(history)
    if update and not recorded:
        raise UserError("--update needs --compare FILE: the recorded results to replace")
    workdir = Path(workdir)
    models, accuracy = suite_models(suite, models, workdir, log=click.echo)
    if scenario:
        _scenario(scenario, mlperf_rules, audit_names, loadgen_logs, out, markdown, BenchConfig(
            targets=list(targets), models=models, precisions=precisions, batches=batches, data=data,
            eval_size=eval_size, calib_size=calib_size, workdir=workdir, threads=threads, suite=suite), min_time)
        return
    cfg = BenchConfig(targets=list(targets), models=models, precisions=precisions, batches=batches, data=data,
                      eval_size=eval_size, calib_size=calib_size, accuracy=accuracy, workdir=workdir,
                      threads=threads, min_time_s=min_time, suite=suite, profile_runs=profile_runs,
                      idle_s=idle_time)
    results = run(cfg, log=click.echo)
    results["command"] = command_line()
    verdict = gate.compare(results, previous, max_accuracy_drop, max_slowdown, allow_env_mismatch,
                           allow_throttled=allow_throttled,
                           min_accuracy_fraction=min_accuracy_fraction or None) if previous else None
    _outputs(results, verdict, out, history, recorded if update else None, markdown, plot, junit)


def _outputs(results: dict, verdict, out, history, baseline, markdown, plot, junit) -> None:
    """The table and headline on the terminal, every file asked for, then the gate's verdict and exit status."""
    from wae_deploy.benchmark import report
    from wae_deploy.benchmark.history import append as append_to_history
    from wae_deploy.benchmark.results import save as save_results

    report.print_table(results)
    for c in results["comparisons"]:
        click.echo(f"speed-up {c['b']} over {c['a']} ({c['target']} {c['precision']} batch {c['batch']}): "
                   f"{c['ratio']:.2f}x (95% CI {c['ci95'][0]:.2f}-{c['ci95'][1]:.2f})")
    for line in report.headline(results):
        click.echo(line)
    if out:
        save_results(results, out)
    if history:
        click.echo(f"added this run to the history: {append_to_history(results, history)}")
    if baseline:
        save_results(results, baseline)
        click.echo(f"recorded a new baseline in {baseline}")
    if markdown:
        report.write_markdown(results, markdown, verdict)
    if plot:
        report.write_plot(results, plot)
    if junit:
        report.write_junit(junit, verdict, results)
    if verdict:
        for line in verdict.lines():
            click.echo(line, err=not verdict.ok)
        click.echo("gate: " + ("passed" if verdict.ok else "FAILED"))
        sys.exit(verdict.exit_code)


def _logs_folder(loadgen_logs: str | None, out: str | None, workdir: Path) -> Path:
    """Where LoadGen's own files go: given, else beside the results file (results.json -> results-loadgen/)."""
    if loadgen_logs:
        return Path(loadgen_logs)
    return Path(out).with_name(Path(out).stem + "-loadgen") if out else workdir / "loadgen"


def _scenario(scenario, mlperf_rules, audit_names, loadgen_logs, out, markdown, cfg, min_time) -> None:
    """`bench --scenario`: the LoadGen run, its results and report; exit 1 when a run is INVALID or an audit fails."""
    from wae_deploy.benchmark import report
    from wae_deploy.benchmark.loadgen import LoadgenConfig, run
    from wae_deploy.benchmark.results import save as save_results

    lg_cfg = LoadgenConfig(scenario, _logs_folder(loadgen_logs, out, cfg.workdir), mlperf_rules=mlperf_rules,
                           min_time_s=min_time, offline_batch=max(cfg.batches),
                           audits=tuple(a.upper() for a in dict.fromkeys(audit_names)))
    results = run(cfg, lg_cfg, log=click.echo)
    results["command"] = command_line()
    for line in report.loadgen_lines(results):
        click.echo(line)
    if out:
        save_results(results, out)
    if markdown:
        report.write_markdown(results, markdown)
    failed = report.loadgen_failures(results)
    for line in failed:
        click.echo(line, err=True)
    if failed:
        sys.exit(1)
