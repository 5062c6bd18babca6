"""The package's imports run one way: every module imports only modules of a lower layer (or of its
own layer, without a cycle), function-local imports included. Read from the source with `ast`, so
it holds whether or not an import path is taken at run time."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tcnkernels"

# Lowest first. A module may import modules of its own or a lower layer.
LAYERS = [
    ["_version", "ops.activations", "ops.specs", "ops.triton", "ops.triton.conv_kernels", "ops.triton.weight_kernels",
     "ops.triton.depthwise_window_kernels", "ops.triton.depthwise_kernels", "ops.triton.depthwise_grad_kernels",
     "ops.triton.stream_kernels", "ops.triton.update_kernels", "_native"],
    ["_backend", "ops.reference", "ops.launching", "ops.tiles"],
    ["ops.weight_launch", "ops.conv_launch", "ops.depthwise_launch", "ops.stream_launch", "ops.update_launch"],
    ["ops.conv", "ops.block", "ops.short_conv", "ops.wavenet"],
    ["functional"],
    ["nn", "short_conv", "wavenet"],
    ["zoo"],
    ["conversion", "integrations", "stream_stages"],
    ["streaming"],
    ["export_streaming"],
    ["export", "selfcheck", "bench.configs", "bench.timer", "bench.markdown", "bench.providers", "bench.host",
     "bench.structure", "bench.deployment", "bench.streaming", "bench.report", "bench.timing", "tasks.data",
     "tasks.presets", "tasks.models", "tasks.train"],
    ["__init__", "ops", "bench", "tasks", "__main__"],
]
LAYER = {module: i for i, names in enumerate(LAYERS) for module in names}


def _module_name(path):
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path):
    """Package modules `path` imports (any depth: module level and inside functions)."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "tcnkernels":
                target = node.module.removeprefix("tcnkernels").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in LAYER else target or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tcnkernels":
                    found.add(alias.name.removeprefix("tcnkernels").lstrip(".") or "__init__")
    return found - {name}


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LAYER)) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    upward = sorted(target for target in _imports(MODULES[module]) if LAYER.get(target, -1) > LAYER[module])
    assert not upward, f"{module} (layer {LAYER[module]}) imports {upward} from a higher layer"


def test_no_import_cycle():
    graph = {module: {t for t in _imports(path) if t in MODULES} for module, path in MODULES.items()}
    state = {}

    def visit(module, trail):
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(module):] + [module]))
        state[module] = "open"
        for target in sorted(graph[module]):
            visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_package_cites_no_path_outside_the_repository():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "../shared" in p.read_text()]
    assert offenders == []
