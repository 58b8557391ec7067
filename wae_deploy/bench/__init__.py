"""Benchmarks: latency (interleaved timing, matmul peak), environment fingerprint, results
schema, reports (table, Markdown, plot, JUnit) and the CI gate. Modules import their heavy
dependencies (runtimes, matplotlib) lazily, so `import wae_deploy.bench` stays cheap."""

import sys

from .. import Step

sys.modules[__name__].__class__ = Step  # `wd.bench(...)`: see wae_deploy.Step
