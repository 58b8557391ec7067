"""Benchmarks: accuracy and interleaved latency of models on targets, and what is made of them.

Suites and sources (suite, sources), timing (latency, peak), the machine's fingerprint
(environment), energy per inference and throttled cells (energy), the results schema (results,
SCHEMA.md), reports (report), the CI gate (gate), the history of runs with its trend page
(history, trend, trend_page, action_benchmark), MLPerf LoadGen scenarios (loadgen), LoadGen's log
files read back (mlperf_logs) and its audits (audits).

May import: core, runtime, convert, training (training and the runtimes only inside functions,
so `import wae_deploy.benchmark` stays cheap). Never the CLI.
"""
