"""`bench --scenario`: each model as MLPerf LoadGen's system under test, on one target and precision.

    results = run(BenchConfig(targets=["ort"], models=["wae.onnx"], data="photos/"),
                  LoadgenConfig("singlestream", outdir=Path("results-loadgen")))
    results["loadgen"][0]["performance"]       # LoadGen's VALID/INVALID, its reason, p90 or samples/s
    results["loadgen"][0]["accuracy"]          # top-1 scored from LoadGen's accuracy log

Per model, in its own folder of LoadGen logs under `outdir`: a performance run, an accuracy run
(every evaluation photo once; top-1 from mlperf_log_accuracy.json, beside the harness's own top-1
on the same photos), then the audits asked for (audits.py). The photos are preprocessed once,
before any timing; the runtime answers each query synchronously in LoadGen's issue thread, so
LoadGen's latency is the runtime's call plus LoadGen's own bookkeeping.

Run lengths: `mlperf_rules` takes mlperf.conf's durations (600 s; Offline at least 24,576 samples;
SingleStream as many queries as early stopping needs, at least LoadGen's 100). Otherwise a short
run of `min_time_s`: LoadGen's VALID then means valid for those short settings, and the report
says it is not an official-length run.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wae_deploy.benchmark import audits, environment, mlperf_logs, results, sources
from wae_deploy.benchmark.suite import BenchConfig, ready_targets
from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command
from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.metrics import accuracy, evaluate_runner
from wae_deploy.runtime.preprocess import Preprocessing

SCENARIOS = {"singlestream": "SingleStream", "offline": "Offline"}
# loadgen/mlperf.conf of mlcommons/inference: the seeds every official run uses, its durations, the
# image classifier's (resnet50's) Offline sample count and performance sample count.
SEEDS = {"qsl_rng_seed": 2085463073848966840, "sample_index_rng_seed": 2747215439041700203,
         "schedule_rng_seed": 16159082839903944936}
OFFICIAL_MIN_DURATION_MS = 600_000
OFFICIAL_MIN_QUERIES = {"SingleStream": 100, "Offline": 24576}
SHORT_MIN_QUERIES = {"SingleStream": 100, "Offline": 1}  # 100: enough for the p90's early-stopping estimate
PERFORMANCE_SAMPLES = 1024
# Offline issues one query sized from the expected throughput; a run that ends before its minimum
# duration is INVALID, so the estimate from a few warm-up calls is raised by this much.
OFFLINE_QPS_MARGIN = 1.5


@dataclass
class LoadgenConfig:
    scenario: str                           # "singlestream" or "offline"
    outdir: Path                            # one folder of LoadGen logs per model goes under it
    mlperf_rules: bool = False              # the official durations; else a short run of min_time_s
    min_time_s: float = 3.0
    offline_batch: int = 8                  # samples per runtime call in Offline (SingleStream: 1)
    audits: tuple[str, ...] = ()            # "TEST01", "TEST04"
    max_queries: int = 0                    # 0: none; a cap below the minimum makes LoadGen end early (INVALID)

    @property
    def loadgen_scenario(self) -> str:
        return SCENARIOS[self.scenario]

    @property
    def batch(self) -> int:
        return 1 if self.scenario == "singlestream" else self.offline_batch


def loadgen_module():
    """mlperf_loadgen, imported only here and only for a --scenario run."""
    try:
        import mlperf_loadgen
    except ImportError as e:
        raise UserError("--scenario needs MLPerf LoadGen: " + install_command("mlperf_loadgen")) from e
    return mlperf_loadgen


class SampleLibrary:
    """The query sample library: the evaluation photos, preprocessed once, before any timing."""

    def __init__(self, data: ImageSet, spec: Preprocessing, chunk: int = 256):
        self.inputs = np.concatenate([spec.normalize(data.images[i:i + chunk]) for i in range(0, len(data), chunk)])
        self.labels = data.labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: list[int]) -> np.ndarray:
        """The inputs of `indices`: a view when they are consecutive (always for one sample), so the
        timed call copies nothing it need not."""
        first = indices[0]
        if indices == list(range(first, first + len(indices))):
            return self.inputs[first:first + len(indices)]
        return self.inputs[indices]


class SystemUnderTest:
    """Answers LoadGen's queries: the samples in calls of `batch`, each completed with its logits as soon
    as its call returns. An exception cannot cross into LoadGen's thread, so it is kept, the samples are
    completed empty (LoadGen then finishes the run) and `run_test` raises it afterwards."""

    def __init__(self, lg, infer: Callable[[np.ndarray], np.ndarray], library: SampleLibrary, batch: int):
        self.lg, self.infer, self.library, self.batch = lg, infer, library, batch
        self.error: BaseException | None = None

    def issue(self, samples) -> None:
        for start in range(0, len(samples), self.batch):
            chunk = samples[start:start + self.batch]
            if self.error is not None:
                self._complete_empty(chunk)
                continue
            try:
                logits = np.ascontiguousarray(self.infer(self.library.batch([s.index for s in chunk])), np.float32)
            except Exception as e:  # noqa: BLE001 - re-raised by run_test once LoadGen has finished
                self.error = e
                self._complete_empty(chunk)
                continue
            # LoadGen copies what it logs inside QuerySamplesComplete; `logits` lives until it returns.
            self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, row.ctypes.data, row.nbytes)
                                          for s, row in zip(chunk, logits)])

    def _complete_empty(self, chunk) -> None:
        self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, 0, 0) for s in chunk])

    def flush(self) -> None:
        pass  # every query is answered before issue() returns: nothing is ever pending


def _no_op(_samples) -> None:
    pass  # the library holds every sample in memory already (SampleLibrary)


def expected_call_s(infer, library: SampleLibrary, batch: int, budget_s: float = 0.5) -> float:
    """Median seconds of one call of `batch` samples over a few calls (at least 5, up to `budget_s`):
    LoadGen's schedule hint. The calls also warm the runtime up before LoadGen times it."""
    x = library.inputs[np.arange(batch) % len(library)]
    times, end = [], time.perf_counter() + budget_s
    while len(times) < 5 or (time.perf_counter() < end and len(times) < 50):
        t0 = time.perf_counter()
        infer(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_length(cfg: LoadgenConfig) -> tuple[int, int]:
    """(minimum duration in ms, minimum query count) of a run: mlperf.conf's, or the short run's."""
    if cfg.mlperf_rules:
        return OFFICIAL_MIN_DURATION_MS, OFFICIAL_MIN_QUERIES[cfg.loadgen_scenario]
    return round(cfg.min_time_s * 1e3), SHORT_MIN_QUERIES[cfg.loadgen_scenario]


def settings(lg, cfg: LoadgenConfig, mode: str, call_s: float):
    """LoadGen's TestSettings for a `mode` ("performance" or "accuracy") run of `cfg`."""
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, cfg.loadgen_scenario)
    s.mode = lg.TestMode.PerformanceOnly if mode == "performance" else lg.TestMode.AccuracyOnly
    for key, value in SEEDS.items():
        setattr(s, key, value)
    s.min_duration_ms, s.min_query_count = run_length(cfg)
    s.max_query_count = cfg.max_queries
    s.single_stream_expected_latency_ns = max(1, round(call_s * 1e9))
    s.offline_expected_qps = OFFLINE_QPS_MARGIN * cfg.batch / call_s
    return s


def run_test(lg, system: SystemUnderTest, test_settings, folder: Path, audit_config: str | None = None) -> Path:
    """One LoadGen test, its logs written to `folder`. StartTest reads an audit.config from the path it is
    given (by default ./audit.config, wherever the bench is started), so each run names its own file in
    its own folder, present only for an audit run: a stray audit.config can never change a run."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "audit.config"
    config.unlink(missing_ok=True)
    if audit_config:
        config.write_text(audit_config)
    log = lg.LogSettings()
    log.log_output.outdir = str(folder)
    log.enable_trace = False  # the trace is megabytes per second of run, and nothing here reads it
    library = system.library
    sut = lg.ConstructSUT(system.issue, system.flush)
    qsl = lg.ConstructQSL(len(library), min(len(library), PERFORMANCE_SAMPLES), _no_op, _no_op)
    try:
        lg.StartTestWithLogSettings(sut, qsl, test_settings, log, str(config))
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if system.error is not None:
        raise UserError(f"the runtime failed during the LoadGen run in {folder}: {system.error}") from system.error
    return folder


def scored(outputs: list[tuple[int, np.ndarray]], labels: np.ndarray) -> dict:
    """Top-1 and top-5 of the accuracy run's logged logits (metrics.accuracy, as the harness scores)."""
    by_index = dict(outputs)  # accuracy mode answers every sample once
    idx = np.array(sorted(by_index))
    return accuracy(np.stack([by_index[i] for i in idx]), labels[idx])


def _run_settings(cfg: LoadgenConfig, library: SampleLibrary, call_s: float) -> dict:
    min_duration_ms, min_query_count = run_length(cfg)
    return {"run_length": "official" if cfg.mlperf_rules else "short", "min_duration_ms": min_duration_ms,
            "min_query_count": min_query_count, "max_query_count": cfg.max_queries, "total_samples": len(library),
            "performance_samples": min(len(library), PERFORMANCE_SAMPLES), "expected_call_ms": call_s * 1e3}


def _audit(lg, cfg: LoadgenConfig, system, call_s: float, folder: Path, name: str, perf, reference) -> dict:
    """One audit's performance run (LoadGen reading its audit.config) and its verdict."""
    config = audits.audit_config(name, same_index=min(3, len(system.library) - 1))
    run_test(lg, system, settings(lg, cfg, "performance", call_s), folder / name, config)
    run = mlperf_logs.read_run(folder / name)
    if name == "TEST01":
        return audits.test01(mlperf_logs.read_outputs(folder / name), reference, run, perf, cfg.mlperf_rules)
    return audits.test04(perf, run)


def measure(lg, cfg: LoadgenConfig, runner, data: ImageSet, spec: Preprocessing, folder: Path, log=print) -> dict:
    """A loaded runner through LoadGen: performance, accuracy and the audits, logs under `folder`."""
    library = SampleLibrary(data, spec)
    harness = evaluate_runner(runner, data, spec)  # the harness's own top-1 on the same photos
    system = SystemUnderTest(lg, runner.infer, library, cfg.batch)
    call_s = expected_call_s(runner.infer, library, cfg.batch)
    log(f"LoadGen {cfg.loadgen_scenario} performance run ({folder.name}) ...")
    perf = mlperf_logs.read_run(run_test(lg, system, settings(lg, cfg, "performance", call_s), folder / "performance"))
    log(f"LoadGen accuracy run ({len(library)} photos) ...")
    outputs = mlperf_logs.read_outputs(run_test(lg, system, settings(lg, cfg, "accuracy", call_s), folder / "accuracy"))
    top = scored(outputs, library.labels)
    out = {"scenario": cfg.loadgen_scenario, "batch": cfg.batch, "logs": str(folder),
           "settings": _run_settings(cfg, library, call_s), "performance": perf.result(), "accuracy": top,
           "harness_accuracy": harness, "audits": {},
           "accuracy_matches_harness": (top["top1"], top["n"]) == (harness["top1"], harness["n"])}
    for name in cfg.audits:
        log(f"LoadGen {name} audit run ...")
        out["audits"][name] = _audit(lg, cfg, system, call_s, folder, name, perf, dict(outputs))
    return out


def _one_target(cfg: BenchConfig) -> tuple:
    """The run's one target and precision; --scenario measures each model on exactly one."""
    if len(cfg.targets) != 1 or len(cfg.precisions or []) > 1:
        raise UserError("--scenario runs each model on one target and precision: give one --target and at most "
                        "one --precision")
    return ready_targets(cfg)[0], (cfg.precisions or ["fp32"])[0]


def _photos(models: list[sources.BenchModel], cfg: BenchConfig) -> dict[str, ImageSet]:
    sets = sources.eval_sets(models, cfg.data, True, cfg.eval_size)
    missing = [m.name for m in models if sets[m.name] is None]
    if missing:
        raise UserError(f"--scenario needs evaluation photos, and {', '.join(missing)} has none: pass --data "
                        "(an untrained or metadata-less model cannot be run as a LoadGen system)")
    return sets


def run(cfg: BenchConfig, lg_cfg: LoadgenConfig, log: Callable[[str], None] = print) -> dict:
    """Resolve and build like `bench` (benchmark.sources), then measure each model through LoadGen."""
    lg = loadgen_module()  # before any export or build: a missing LoadGen is one line, not minutes in
    target, precision = _one_target(cfg)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    models = sources.resolve(cfg.models, [target], cfg.workdir, cfg.data, log)
    photos = _photos(models, cfg)
    threads = cfg.threads or os.cpu_count()
    out = results.new_results(environment.fingerprint(threads),
                              {"name": cfg.suite, "models": [m.name for m in models], "threads": threads,
                               "eval_images": len(next(iter(photos.values()))) if photos else 0,
                               "scenario": lg_cfg.loadgen_scenario}, loadgen=[])
    for m in models:
        p = m.artifact.precision if m.artifact is not None else precision
        path = m.runs_on(target, p, cfg.workdir, cfg.calib_size, log)
        if path is None:
            log(f"{m.name} does not run on {target.name} {p}; skipped")
            continue
        runner = m.load(path, target, threads)
        try:
            entry = measure(lg, lg_cfg, runner, photos[m.name], m.preprocessing,
                            lg_cfg.outdir / f"{m.name}-{target.name}-{p}", log)
        finally:
            runner.close()
        out["loadgen"].append({"model": m.name, "arch": m.arch or m.name, "source": m.kind, "target": target.name,
                               "precision": p, "artifact": str(path), **entry})
    return out
