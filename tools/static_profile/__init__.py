"""The static profile of the sm_90/sm_80 binaries the launchers really launch, and the compile-only
tier's helpers: developer tooling, not installed with the package (it reads Triton's compiler
internals and its budgets hold for one Triton version).

launches         record what the launchers launch (on meta tensors) and compile it as the runtime would
sass             read a compiled kernel: registers, spills, loads, MMA, the steady-state loop
profile          the profile of the paper networks, its budgets and its report
compile_kernels  `python -m tools.static_profile.compile_kernels 90`: every shipped configuration

Run from the repository root (`python benchmarks/sass_profile.py`, or the test suite).
"""
