"""Static profile of the GPU binaries tcnkernels launches, built on a CPU: no GPU needed, nothing timed.

    python benchmarks/sass_profile.py                      # all configs, tf32/ieee/bf16, sm_90 + sm_80
    python benchmarks/sass_profile.py --configs seq-mnist --precisions tf32 --archs 90 --out /tmp/p
    python benchmarks/sass_profile.py --variants           # the general op's activations, gates, depthwise
    python benchmarks/sass_profile.py --short-conv         # causal-conv1d's API: widths 4 and 16, dilations 1, 8
    python benchmarks/sass_profile.py --wavenet            # the fused WaveNet block at Parallel WaveGAN's layer

Writes sass-sm90.json and sass-sm90.md (default: benchmarks/results/) and prints any broken budget.
Run it after every kernel or launcher change and compare with the committed tables (docs/speed.md
says how to read them). Needs triton's bundled CUDA tools (Linux wheel). The profile's code lives in
tools/static_profile (developer tooling, not installed with the package).
"""
import argparse
import json
import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels only: the interpreter's cannot be profiled
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, set so that 3.9 does not warn
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

from tools.static_profile import profile as sp  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(sp.PROFILE_CONFIGS))
    parser.add_argument("--precisions", default=",".join(sp.PRECISIONS))
    parser.add_argument("--archs", default="90,80")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--variants", action="store_true",
                        help="the general op's activations, gates and depthwise kernels (sass-sm90-variants.md)")
    parser.add_argument("--short-conv", action="store_true",
                        help="causal-conv1d's API: forward, backward, update (sass-sm90-short-conv.md)")
    parser.add_argument("--wavenet", action="store_true",
                        help="the fused WaveNet block at Parallel WaveGAN's layer (sass-sm90-wavenet.md)")
    args = parser.parse_args()
    if args.wavenet:
        return _wavenet(args.out)
    if args.variants:
        return _variants(args.out)
    if args.short_conv:
        return _short_conv(args.out)
    rows = sp.profile(args.configs.split(","), args.precisions.split(","), [int(a) for a in args.archs.split(",")],
                        workers=args.workers)
    env = sp.environment()
    for path in sp.write_profile(rows, env, args.out):
        print(f"wrote {path}")
    broken = sp.violations(rows)
    for v in broken:
        print(f"BUDGET BROKEN: {v}")
    return 1 if broken else 0


def _wavenet(out):
    from tools.static_profile import wavenet
    rows, launch_counts = wavenet.rows()
    env = sp.environment()
    return _write_report(out, "sass-sm90-wavenet", env, dict(rows=rows, launches=launch_counts),
                         wavenet.render_markdown(rows, launch_counts, env), wavenet.violations(rows))


def _short_conv(out):
    from tools.static_profile import short_conv
    fn_rows, upd_rows, opt_rows = short_conv.rows(), short_conv.update_rows(), short_conv.option_rows()
    env = sp.environment()
    # its budgets are goals still being worked towards: reported, not failed
    return _write_report(out, "sass-sm90-short-conv", env, dict(rows=fn_rows, update=upd_rows, options=opt_rows),
                         short_conv.render_markdown(fn_rows, upd_rows, env, opt_rows), short_conv.violations(fn_rows),
                         broken_fails=False)


def _variants(out):
    from tools.static_profile import variants
    rows, dw_rows, layout = variants.variant_rows(), variants.depthwise_rows(), variants.layout_rows()
    env = sp.environment()
    return _write_report(out, "sass-sm90-variants", env, dict(rows=rows, depthwise=dw_rows, layouts=layout),
                         variants.render_markdown(rows, dw_rows, env, layout), variants.violations(rows, dw_rows))


def _write_report(out, name, env, tables, markdown, broken, broken_fails=True):
    """<out>/<name>.json (the environment and `tables`) and <name>.md; prints each broken budget and
    returns the exit status (1 when one is broken and `broken_fails`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(dict(environment=env, **tables), indent=1))
    (out / f"{name}.md").write_text(markdown)
    print(f"wrote {out / f'{name}.md'}")
    for v in broken:
        print(f"BUDGET {'BROKEN' if broken_fails else 'NOT MET'}: {v}")
    return 1 if broken and broken_fails else 0


if __name__ == "__main__":
    sys.exit(main())
