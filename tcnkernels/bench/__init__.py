"""The speed report behind `tcnkernels bench` and the pytest-benchmark suites in benchmarks/.

configs    what is measured: the paper's TCNs, sweeps, modes, providers, FLOPs and bytes per case
providers  the model each provider runs and one callable step of it (eager or CUDA-graph replay)
timing     measured ceilings, providers alternated round by round, medians, the report loop
report     environment, Markdown with goals, chart, comparison with a stored report, files
host       host-side overhead per call with Triton launches stubbed out
"""
