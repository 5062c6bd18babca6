"""The speed report behind `tcnkernels bench` and the pytest-benchmark suites in benchmarks/.

configs    what is measured: the paper's TCNs, sweeps, modes, providers, FLOPs and bytes per case
providers  the model each provider runs and one callable step of it (eager or CUDA-graph replay)
timing     measured ceilings, providers alternated round by round, medians, the report loop
report     environment, Markdown with goals, chart, comparison with a stored report, files
host       host-side overhead per call with Triton launches stubbed out
launches   what the launchers launch, recorded on meta tensors and compiled as the runtime would (CPU)
sass       reading a compiled kernel: registers, spills, loads, MMA, the steady-state loop
static_profile   the static sm_90/sm_80 profile of the paper networks, its budgets and report
"""
