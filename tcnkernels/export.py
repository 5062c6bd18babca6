"""Deployment: torch.export programs that run without tcnkernels, and ONNX files.

    ep = torch.export.export(model.eval(), (x,), dynamic_shapes=({0: Dim.DYNAMIC, 2: Dim.DYNAMIC},))
    plain = tcnkernels.export.decompose(ep)        # standard ATen ops, weight norm folded
    tcnkernels.export.to_onnx(model, x, "tcn.onnx")  # Conv (with its pads and dilation), activations, Add, Mul

`torch.export.export` works on every tcnkernels module and on what `convert` made of a library's
model: where the kernels run (CUDA, or Triton's interpreter), the program keeps tcnkernels'
registered ops (`tcnkernels::conv1d`, `tcnkernels::causal_conv1d`), which need tcnkernels to run;
elsewhere it holds the PyTorch path's ATen ops. `decompose` rewrites every registered op into the
ATen ops of its PyTorch reference (tcnkernels.ops.reference, the same one the tests check the
kernels against) and folds weight norm (`aten._weight_norm` of two parameters, whichever API made
it) into one plain weight, so that the program runs, saved with `torch.export.save`, where
tcnkernels is not installed. `to_onnx` exports through the decomposed program with the torch.onnx
dynamo exporter (onnx and onnxscript needed; `pip install tcnkernels[export]`).
"""
import copy
import logging
import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import ExportGraphSignature, InputKind, InputSpec, TensorArgument

from .ops import short_conv as short_conv_ops
from .ops.conv import spec_from_args
from .ops.reference import conv1d_reference

__all__ = ["decompose", "fold_weight_norm", "to_onnx"]


# ------------------------------------------------------------------------------------------------
# The registered ops as their PyTorch references

def _conv1d(x, weight, bias, slope, dilation, groups, pad_right, activation, p0, p1):
    spec = spec_from_args(weight, dilation, groups, pad_right, activation, p0, p1)
    K = weight.shape[2]
    y = conv1d_reference(x, weight, bias, dilation, groups, ((K - 1) * dilation - pad_right, pad_right),
                         spec.activation, slope)
    return y, x.new_empty(0)  # what the backward keeps: nothing, in an inference program


def _causal_conv1d(x, weight, bias, seq_idx, initial_states, dilation, silu):
    """The PyTorch path's forward (tcnkernels.ops.short_conv.torch_forward) in functional ops: the
    history concatenated, not written into a buffer."""
    acc = short_conv_ops.acc_dtype(x, weight, bias, initial_states)
    width, L = weight.shape[1], x.shape[2]
    S = (width - 1) * dilation
    xs = F.pad(x.to(acc), (S, 0)) if initial_states is None else torch.cat([initial_states.to(acc), x.to(acc)], 2)
    z = short_conv_ops._torch_pre(xs, weight.to(acc), None if bias is None else bias.to(acc),
                                  short_conv_ops._masks(seq_idx, S, width, dilation, L), dilation, L)
    if silu:
        z = F.silu(z)
    if seq_idx is not None:
        z = torch.where((seq_idx < 0).unsqueeze(1), 0, z)
    return z.to(x.dtype)


DECOMPOSITIONS = {torch.ops.tcnkernels.conv1d.default: _conv1d,
                  torch.ops.tcnkernels.causal_conv1d.default: _causal_conv1d,
                  torch.ops.tcnkernels.causal_conv1d_update_functional.default: short_conv_ops.torch_update_functional}


def _functional_updates(program):
    """`program` with each in-place decode update (export functionalises it into
    `auto_functionalized_v2(tcnkernels.causal_conv1d_update, ..., _all_bases=[state])`, returning
    the output and the new state) replaced by the pure `causal_conv1d_update_functional`, which
    returns the same pair and decomposes like the other ops. The state write stays the program's
    (a buffer mutation or a mutated input), as export recorded it."""
    update = torch.ops.tcnkernels.causal_conv1d_update.default
    graph = program.graph_module.graph
    nodes = [n for n in graph.nodes if n.op == "call_function" and n.args[:1] == (update,)
             and n.target is torch.ops.higher_order.auto_functionalized_v2]
    for node in nodes:
        kwargs = node.kwargs
        if any(key in kwargs for key in ("_conv_state_size", "_conv_state_stride", "_conv_state_storage_offset")):
            raise ValueError("decompose cannot rewrite causal_conv1d_update on a view of a state tensor: pass the "
                             "whole conv_state (a buffer or an input)")
        state = kwargs["_all_bases"][kwargs["_conv_state_base_index"]]
        with graph.inserting_before(node):
            pure = graph.call_function(torch.ops.tcnkernels.causal_conv1d_update_functional.default,
                                       (kwargs["x"], state, kwargs["weight"], kwargs["bias"], kwargs["cache_seqlens"],
                                        kwargs["conv_state_indices"], kwargs["dilation"], kwargs["silu"]))
        pure.meta = dict(node.meta)  # the same (output, new state) pair
        node.replace_all_uses_with(pure)
        graph.erase_node(node)
    if nodes:
        program.graph_module.recompile()
    return program


def decompose(exported):
    """`exported` (a torch.export.ExportedProgram) with tcnkernels' registered ops rewritten as ATen
    ops and weight norm folded into plain weights. The decode update `causal_conv1d_update` becomes
    ATen ops computing the new state, which the program writes back as export recorded it (a
    buffer mutation, or a mutated input). Raises ValueError for a program that still holds a
    tcnkernels op (a training graph's backward ops)."""
    if not isinstance(exported, ExportedProgram):
        raise TypeError(f"decompose takes a torch.export.ExportedProgram, got {type(exported).__name__}")
    program = _functional_updates(exported.run_decompositions({}))
    program = fold_weight_norm(program.run_decompositions(DECOMPOSITIONS))
    left = sorted({str(target) for n in program.graph.nodes if n.op == "call_function"
                   for target in (n.target, *n.args[:1]) if str(target).startswith("tcnkernels.")})
    if left:
        raise ValueError(f"decompose cannot rewrite {', '.join(left)}: export an inference model (eval mode)")
    return program


# ------------------------------------------------------------------------------------------------
# Weight norm folded

def _folded_name(fqn, taken):
    """`conv.weight_v` / `conv.parametrizations.weight.original1` -> `conv.weight` (unique)."""
    if fqn.endswith("weight_v"):
        name = fqn[:-len("_v")]
    elif ".parametrizations." in "." + fqn:
        head, _, tail = ("." + fqn).rpartition(".parametrizations.")
        name = (head + "." + tail.split(".")[0]).lstrip(".")
    else:
        name = fqn + "_folded"
    while name in taken:
        name += "_"
    return name


def fold_weight_norm(exported):
    """`exported` with every `aten._weight_norm(v, g, dim)` of two parameters replaced by one plain
    parameter holding its value (the unused v and g dropped). Exact: the same op computes it."""
    exported = copy.deepcopy(exported)
    signature, graph = exported.graph_signature, exported.graph_module.graph
    params, state = signature.inputs_to_parameters, dict(exported.state_dict)
    placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
    first_user = next(placeholders[s.arg.name] for s in signature.input_specs if s.kind == InputKind.USER_INPUT)
    specs = list(signature.input_specs)
    at = next(i for i, s in enumerate(specs) if s.kind == InputKind.USER_INPUT)
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten._weight_norm.default:
            continue
        v, g = node.args[:2]
        if not all(getattr(a, "op", None) == "placeholder" and a.name in params for a in (v, g)):
            continue
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        with torch.no_grad():
            weight = torch._weight_norm(state[params[v.name]], state[params[g.name]], dim)
        name = _folded_name(params[v.name], state)
        state[name] = nn.Parameter(weight, requires_grad=False)
        with graph.inserting_before(first_user):
            folded = graph.placeholder("p_" + name.replace(".", "_"))
        folded.meta = dict(node.meta)
        node.replace_all_uses_with(folded)
        graph.erase_node(node)
        specs.insert(at, InputSpec(InputKind.PARAMETER, TensorArgument(folded.name), target=name))
        at += 1
    # parameters no node reads any more (weight norm's v and g; the authors' block's aliases)
    for spec in list(specs):
        node = placeholders.get(spec.arg.name)
        if spec.kind == InputKind.PARAMETER and node is not None and not node.users:
            graph.erase_node(node)
            specs.remove(spec)
    used = {s.target for s in specs if s.kind == InputKind.PARAMETER}
    state = {k: v for k, v in state.items() if k in used or k in signature.buffers}
    exported.graph_module.recompile()
    return ExportedProgram(root=exported.graph_module, graph=graph,
                           graph_signature=ExportGraphSignature(specs, signature.output_specs), state_dict=state,
                           range_constraints=exported.range_constraints, module_call_graph=exported.module_call_graph,
                           example_inputs=exported.example_inputs, constants=exported.constants,
                           verifiers=exported.verifiers)


# ------------------------------------------------------------------------------------------------
# ONNX

def _random_in_training(model):
    """(qualified name, what) of a module whose output an inference graph cannot reproduce: dropout
    > 0 active (training mode, or Darts' predict-time mc_dropout), RReLU or a batch norm in training
    mode. None when there is none."""
    for name, module in model.named_modules():
        name = name or type(model).__name__
        if isinstance(module, nn.modules.dropout._DropoutNd):
            if getattr(module, "mc_dropout_enabled", module.training) and module.p > 0:
                return name, "applies dropout (training mode, or Darts' mc_dropout)"
        elif module.training and isinstance(module, nn.RReLU):
            return name, "draws random slopes in training mode (RReLU)"
        elif module.training and isinstance(module, nn.modules.batchnorm._BatchNorm):
            return name, "normalises with the batch's statistics in training mode (batch norm)"
        elif module.training and isinstance(getattr(module, "dropout", None), float) and module.dropout > 0:
            return name, "applies dropout in training mode"
    return None


def _check_model(model, example):
    """`example` as a tuple of the model's inputs: x (B, C, T) (or [N, T, C] for a channel-last
    model), and a WaveNet block's conditioning c (B, aux, T)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = (example,) if isinstance(example, torch.Tensor) else tuple(example) \
        if isinstance(example, (tuple, list)) else None
    if not inputs or not all(isinstance(t, torch.Tensor) and t.dim() == 3 for t in inputs):
        raise ValueError("example must be a 3-D input tensor (B, C, T), or a tuple (x, c) of them for a WaveNet "
                         f"block, got {example if not isinstance(example, torch.Tensor) else tuple(example.shape)}")
    found = _random_in_training(model)
    if found is not None:
        raise ValueError(f"cannot export {found[0]}: it {found[1]}, which an inference graph does not "
                         "reproduce; export model.eval()")
    return inputs


class DartsForecast(nn.Module):
    """A Darts forecasting module (a fitted `TCNModel`'s `.model`) called as its predict step calls
    it: x [N, input_chunk_length, C] (the past target, then any past covariates) -> the prediction
    [N, output_chunk_length, target_size, nr_params]. Darts' forward takes its own batch object,
    which torch.export cannot flatten: this is what `to_onnx` exports for a Darts model."""

    def __init__(self, module):
        super().__init__()
        from darts.models.forecasting.pl_forecasting_module import ModuleStage
        from darts.utils.data.torch_datasets.utils import PLModuleInput
        self.module, self._batch, self._stage = module, PLModuleInput, ModuleStage.PREDICT

    def forward(self, x):
        return self.module(self._batch(past_target=x, stage=self._stage)).prediction


def _is_darts(model):
    return isinstance(getattr(model, "res_blocks_list", None), list) and hasattr(model, "input_chunk_length")


def to_onnx(model, example, path, streaming=False, dynamic=True, opset_version=None):
    """Export `model` (eval mode) to the ONNX file `path`; `example` a (B, C, T) input. Batch and
    time are dynamic unless `dynamic=False`. Returns the torch.onnx ONNXProgram. `streaming=True`
    exports one step of the model's Streamer instead (tcnkernels.export_streaming)."""
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "model", None), nn.Module):
        model = model.model  # a fitted Darts TCNModel: its torch module
    inputs = _check_model(model, example)
    if streaming:
        from .export_streaming import streaming_step_program  # lazily: most exports are whole windows
        program, inputs, names = streaming_step_program(model, inputs[0])
        return _write_onnx(decompose(program), inputs, path, opset_version, **names)
    if _is_darts(model):
        model = DartsForecast(model)
    shapes = dynamic_shapes(model, inputs) if dynamic else None
    if dynamic:  # sizes 0 and 1 would be specialised: trace with two rows and two steps at least
        inputs = tuple(_at_least_two(t, axes) for t, axes in zip(inputs, shapes))
    with torch.no_grad():
        program = decompose(torch.export.export(model, inputs, dynamic_shapes=shapes))
    names = [["x"], ["x", "c"]][len(inputs) > 1]
    outputs = program.module()(*inputs)
    return _write_onnx(program, inputs, path, opset_version, input_names=names,
                       output_names=["y", "skip"] if isinstance(outputs, tuple) else ["y"],
                       axis_names=[{axis: getattr(dim, "__name__", f"time_{name}") for axis, dim in axes.items()}
                                   for axes, name in zip(shapes or (), names)])


def _at_least_two(t, axes):
    for axis in axes:
        if t.shape[axis] < 2:
            t = t.repeat_interleave(2, dim=axis).narrow(axis, 0, 2) if t.shape[axis] else t
    return t


def dynamic_shapes(model, inputs):
    """Batch and time dynamic for every input: time is the last axis, or the middle one for a
    channel-last model ([N, T, C]: its first conv's input channels on the last axis)."""
    from .short_conv import ShortConvolution
    from .stream_stages import model_stages  # the streamer's reading of the model says its layout
    try:
        channels_last = isinstance(model, (ShortConvolution, DartsForecast)) or model_stages(model)[1].channels_last
    except ValueError:  # a model the streamer does not step (non-causal, ...): pytorch-tcn says its layout
        channels_last = getattr(model, "input_shape", "NCL") == "NLC"
    batch, time = Dim("batch"), Dim("time")
    if isinstance(model, DartsForecast):  # its forward views the output at input_chunk_length steps
        return tuple({0: batch} for _ in inputs)
    axis = 1 if channels_last else 2
    # An input of another length (Parallel WaveGAN's conditioning, upsampled inside the model) gets
    # its own, which export relates to the first's as the model requires.
    return tuple({0: batch, axis: time if t.shape[axis] == inputs[0].shape[axis] else Dim.AUTO} for t in inputs)


def _write_onnx(program, inputs, path, opset_version, input_names, output_names, axis_names=()):
    """Export `program` to `path`; `axis_names[i]` ({axis: name}) names input i's dynamic axes in
    the file (the exporter writes its symbols, s0, s1, ..., otherwise)."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as exc:
        raise ImportError("to_onnx needs onnx and onnxscript: pip install tcnkernels[export]") from exc
    # the exporter logs a warning per torchvision op it cannot register, which these graphs never hold
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        onnx_program = torch.onnx.export(program, inputs, input_names=input_names, output_names=output_names,
                                         dynamo=True, opset_version=opset_version, verbose=False)
    finally:
        registration.setLevel(level)
    _name_dynamic_axes(onnx_program.model, axis_names)
    onnx_program.save(str(path))
    return onnx_program


def _name_dynamic_axes(model, axis_names):
    """Rename the symbols of the inputs' dynamic axes (`s77`) to `axis_names`' (`batch`), in every
    shape of the graph, expressions included (`s53 + 2` -> `time + 2`)."""
    import onnx_ir as ir  # onnxscript's IR, installed with it
    names = {}
    for value, axes in zip(model.graph.inputs, axis_names):
        for axis, name in axes.items():
            dim = value.shape[axis] if value.shape is not None else None
            if isinstance(dim, ir.SymbolicDim) and dim.value and re.fullmatch(r"s\d+", dim.value):
                names.setdefault(dim.value, name)  # (an axis export derived from another's keeps its formula)
    if not names:
        return
    symbol = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")

    def renamed(dim):
        if isinstance(dim, ir.SymbolicDim) and dim.value:
            return ir.SymbolicDim(symbol.sub(lambda m: names[m.group(1)], dim.value))
        return dim

    values = [*model.graph.inputs, *model.graph.outputs, *(v for node in model.graph for v in node.outputs)]
    for value in values:
        if value.shape is not None:
            value.shape = ir.Shape([renamed(d) for d in value.shape.dims])
