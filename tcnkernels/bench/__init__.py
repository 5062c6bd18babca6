"""The speed report behind `tcnkernels bench` and the pytest-benchmark suites in benchmarks/.

configs    what is measured: the paper's TCNs, sweeps, modes, providers, FLOPs and bytes per case
providers  the model each provider runs and one callable step of it (eager or CUDA-graph replay)
timer      the one timer: warm-up calls, then each call's wall time (waiting for the device)
timing     measured ceilings, providers alternated round by round, medians, the report loop
report     environment, Markdown with goals, chart, comparison with a stored report, files
markdown   the tables
host       host-side overhead per call with Triton launches stubbed out (`--host`)
structure  launches and saved activations of a training step, on meta tensors (`--structure`)
streaming  per-step latency of the streaming providers (`--streaming`)

The static profile of the compiled GPU binaries is developer tooling, outside the package:
tools/static_profile in a clone (`python benchmarks/sass_profile.py`).
"""
