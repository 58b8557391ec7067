"""Benchmarks: latency (interleaved timing, matmul peak), environment fingerprint, results
schema, reports (table, Markdown, plot, JUnit) and the CI gate. Modules import their heavy
dependencies (runtimes, matplotlib) lazily, so `import wae_deploy.bench` stays cheap."""
