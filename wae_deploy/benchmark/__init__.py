"""Benchmarks: accuracy and interleaved latency of models on targets, and what is made of them.

Suites and sources (suite, sources), timing (latency, peak), the machine's fingerprint
(environment), the results schema (results, SCHEMA.md), reports (report) and the CI gate (gate);
MLPerf LoadGen scenarios (loadgen), LoadGen's log files read back (mlperf_logs) and its audits (audits).

May import: core, runtime, convert, training (training and the runtimes only inside functions,
so `import wae_deploy.benchmark` stays cheap). Never the CLI.
"""
