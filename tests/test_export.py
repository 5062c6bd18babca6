"""Deployment (tcnkernels.export): torch.export keeps the registered ops where the kernels run (here
Triton's interpreter), `decompose` leaves standard ATen ops only with weight norm folded, and the
decomposed program runs without tcnkernels; ONNX files (the real onnx, onnxscript and onnxruntime)
give PyTorch's outputs at other batch sizes and lengths with standard ops only; the streaming ONNX
step over random chunkings equals the whole window's forward."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import pytorch_tcn
import torch
from neuralforecast.common import _modules as nf_modules
from torch import nn

import tcnkernels
from tcnkernels import export as tx
from tcnkernels.ops.activations import NAMES

# what the ONNX graphs may hold: convs with their pads and dilations, activations, arithmetic, and
# the concatenations and slices of gates, conditioning and streaming states
ONNX_OPS = {"Conv", "Add", "Mul", "Sub", "Div", "Relu", "LeakyRelu", "Elu", "Selu", "Gelu", "Sigmoid", "Tanh",
            "Softplus", "Erf", "Pow", "Exp", "Log", "Mish", "HardSigmoid", "PRelu", "Split", "Concat", "Slice",
            "Transpose", "Reshape", "Where", "Greater", "Neg", "Max", "Min", "Identity", "Constant"}


def _ops(program):
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


def _dynamic_export(model, inputs):
    return torch.export.export(model, inputs, dynamic_shapes=tx.dynamic_shapes(model, inputs))


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


def _check_program(model, inputs, others, kernels=True):
    """Export, decompose, and compare the decomposed program with the model on other shapes."""
    with torch.no_grad():
        program = _dynamic_export(model, inputs)
        if kernels:
            assert any(op.startswith("tcnkernels.") for op in _ops(program)), _ops(program)
        plain = tx.decompose(program)
        assert not any(op.startswith("tcnkernels.") or "weight_norm" in op for op in _ops(plain)), _ops(plain)
        for other in others:
            for got, want in zip(_outputs(plain.module()(*other)), _outputs(model(*other))):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    return plain


def _check_onnx(model, inputs, others, path):
    onnx_program = tx.to_onnx(model, inputs if len(inputs) > 1 else inputs[0], path)
    assert onnx_program is not None
    graph = onnx.load(str(path)).graph
    assert {n.op_type for n in graph.node} <= ONNX_OPS, {n.op_type for n in graph.node} - ONNX_OPS
    assert "Pad" not in {n.op_type for n in graph.node}  # the causal pads are Conv's own
    session = onnxruntime.InferenceSession(str(path))
    with torch.no_grad():
        for other in others:
            got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), other)})
            for g, want in zip(got, _outputs(model(*other))):
                np.testing.assert_allclose(g, want.numpy(), rtol=1e-5, atol=1e-5)


def _tcn(**options):
    torch.manual_seed(0)
    return tcnkernels.TemporalConvNet(3, [8, 8, 6], kernel_size=3, dropout=0.2, **options).eval()


SHAPES = [(torch.randn(5, 3, 41),), (torch.randn(1, 3, 2),)]


@pytest.mark.parametrize("options", [{}, pytest.param({"activation": "gelu", "padding": "same"},
                                                      marks=pytest.mark.slow),
                                     pytest.param({"final_activation": False}, marks=pytest.mark.slow)],
                         ids=["reference", "gelu-same", "no-final-relu"])
def test_temporal_conv_net_exports_decomposes_and_runs_in_onnxruntime(options, tmp_path):
    tcn = _tcn(**options)
    _check_program(tcn, (torch.randn(2, 3, 30),), SHAPES)
    _check_onnx(tcn, (torch.randn(2, 3, 30),), SHAPES, tmp_path / "tcn.onnx")


@pytest.mark.parametrize("activation", [None, *NAMES, "prelu"])
def test_every_activation_and_gate_exports_to_onnx(activation, tmp_path):
    torch.manual_seed(1)
    act = nn.PReLU(8) if activation == "prelu" else activation
    conv = tcnkernels.TemporalConv1d(4, 8, 3, dilation=2, activation=act).eval()
    x = (torch.randn(2, 4, 20),)
    others = [(torch.randn(3, 4, 33),)]
    _check_program(conv, x, others)
    _check_onnx(conv, x, others, tmp_path / "conv.onnx")


@pytest.mark.parametrize("groups, padding", [(1, "same"), (1, "anticausal"), (2, "causal"), (6, "causal"),
                                             (6, "same")], ids=lambda v: str(v))
def test_paddings_groups_and_depthwise_convs_export_to_onnx(groups, padding, tmp_path):
    torch.manual_seed(2)
    conv = tcnkernels.TemporalConv1d(6, 6, 3, dilation=3, groups=groups, padding=padding, activation="relu").eval()
    x, others = (torch.randn(2, 6, 25),), [(torch.randn(4, 6, 31),)]
    _check_program(conv, x, others)
    _check_onnx(conv, x, others, tmp_path / "conv.onnx")


def test_wavenet_block_exports_to_onnx(tmp_path):
    torch.manual_seed(3)
    block = tcnkernels.WaveNetBlock(6, 10, 7, 3, 2, aux_channels=4).eval()
    inputs = (torch.randn(2, 6, 30), torch.randn(2, 4, 30))
    others = [(torch.randn(3, 6, 41), torch.randn(3, 4, 41))]
    _check_program(block, inputs, others)
    _check_onnx(block, inputs, others, tmp_path / "wavenet.onnx")


def test_causal_conv1d_fn_exports_and_decomposes():
    torch.manual_seed(4)
    conv = tcnkernels.ShortConvolution(16, 4, dilation=2, bias=True, activation="silu").eval()
    x = torch.randn(2, 16, 24).transpose(1, 2)  # ShortConvolution takes (B, L, D)
    _check_program(conv, (x.contiguous(),), [(torch.randn(3, 37, 16),)])


@pytest.mark.slow
def test_converted_library_models_export_to_onnx(tmp_path):
    """pytorch-tcn (parametrized weight norm, [N, T, C]) and NeuralForecast's encoder, converted."""
    torch.manual_seed(5)
    ptcn = tcnkernels.convert(pytorch_tcn.TCN(3, [6, 6], kernel_size=3, dropout=0.0, causal=True,
                                              use_norm="weight_norm", input_shape="NLC")).eval()
    _check_program(ptcn, (torch.randn(2, 30, 3),), [(torch.randn(3, 41, 3),)])
    _check_onnx(ptcn, (torch.randn(2, 30, 3),), [(torch.randn(3, 41, 3),)], tmp_path / "ptcn.onnx")
    encoder = tcnkernels.convert(nf_modules.TemporalConvolutionEncoder(3, 5, 2, [1, 2, 4], activation="ReLU")).eval()
    _check_program(encoder, (torch.randn(2, 19, 3),), [(torch.randn(4, 23, 3),)])
    _check_onnx(encoder, (torch.randn(2, 19, 3),), [(torch.randn(4, 23, 3),)], tmp_path / "nf.onnx")


def test_weight_norm_is_folded_into_plain_weights():
    tcn = _tcn()
    plain = tx.decompose(_dynamic_export(tcn, (torch.randn(2, 3, 30),)))
    keys = set(plain.state_dict)
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys), keys
    assert {"network.0.net.0.weight", "network.0.net.4.weight", "network.2.downsample.weight"} <= keys
    with torch.no_grad():
        torch.testing.assert_close(plain.state_dict["network.0.net.0.weight"], tcn.network[0].conv1.weight)


@pytest.mark.slow
def test_the_decomposed_program_runs_without_tcnkernels(tmp_path):
    tcn = _tcn()
    plain = tx.decompose(_dynamic_export(tcn, (torch.randn(2, 3, 30),)))
    torch.export.save(plain, tmp_path / "tcn.pt2")
    x = torch.randn(3, 3, 17)
    with torch.no_grad():
        want = tcn(x)
    torch.save({"x": x}, tmp_path / "x.pt")
    code = ("import sys; sys.modules['tcnkernels'] = None; import json, torch; "
            f"ep = torch.export.load({str(tmp_path / 'tcn.pt2')!r}); x = torch.load({str(tmp_path / 'x.pt')!r})['x']; "
            "print(json.dumps(ep.module()(x).tolist()))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.tensor(json.loads(proc.stdout.splitlines()[-1])), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The streaming step

def _stream_onnx(model, example, path, batch, length, chunkings, channels_last=False, c_channels=0, whole=None):
    """Run the streaming ONNX step over each chunking of a random window: its outputs concatenated
    must equal the model's forward on the whole window."""
    tx.to_onnx(model, example, path, streaming=True)
    session = onnxruntime.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    states = [n for n in names if n.startswith("state.")]
    assert outputs == [o for o in ("y", "skip") if o in outputs] + ["new_" + n for n in states]
    for chunks in chunkings:
        x = torch.randn(batch, length, example.shape[2]) if channels_last else torch.randn(batch, example.shape[1],
                                                                                            length)
        c = torch.randn(batch, c_channels, length) if c_channels else None
        feeds = {n: np.zeros([batch] + list(i.shape[1:]), np.float32)
                 for n, i in zip(names, session.get_inputs()) if n in states}
        ys, start = [], 0
        for n in chunks:
            piece = x[:, start:start + n] if channels_last else x[..., start:start + n]
            inputs = {"x": piece.numpy(), **feeds}
            if c is not None:
                inputs["c"] = c[..., start:start + n].numpy()
            got = session.run(None, inputs)
            heads = len(outputs) - len(states)
            ys.append(got[:heads])
            feeds = dict(zip(states, got[heads:]))
            start += n
        with torch.no_grad():
            want = _outputs((whole or model)(x) if c is None else _stack_forward(model, x, c))
        for k, w in enumerate(want):
            np.testing.assert_allclose(np.concatenate([y[k] for y in ys], 1 if channels_last else 2), w.numpy(),
                                       rtol=1e-5, atol=1e-5)


def _stack_forward(stack, x, c):
    skips = 0
    for block in stack:
        x, skip = block(x, c)
        skips = skips + skip
    return x, skips


def _chunkings(length, seed):
    rng = np.random.default_rng(seed)
    out = [[1] * length, [length]]
    for _ in range(2):
        cuts = np.sort(rng.choice(np.arange(1, length), size=4, replace=False))
        out.append(list(np.diff([0, *cuts, length])))
    return out


@pytest.mark.slow
def test_streaming_onnx_step_equals_the_whole_forward(tmp_path):
    tcn = _tcn()
    _stream_onnx(tcn, torch.randn(2, 3, 5), tmp_path / "step.onnx", 3, 23, _chunkings(23, 0))
    # and at another batch size than the example's, with the documented state layout
    session = onnxruntime.InferenceSession(str(tmp_path / "step.onnx"))
    shapes = {i.name: i.shape[1:] for i in session.get_inputs()}
    assert shapes["state.network.0.conv1"] == [3, 2] and shapes["state.network.2.conv2"] == [6, 8]
    _stream_onnx(tcn, torch.randn(1, 3, 1), tmp_path / "step1.onnx", 7, 11, _chunkings(11, 1))


@pytest.mark.slow
def test_streaming_onnx_step_of_library_models_and_a_wavenet_stack(tmp_path):
    torch.manual_seed(6)
    ptcn = tcnkernels.convert(pytorch_tcn.TCN(3, [6, 6], kernel_size=3, dropout=0.0, causal=True,
                                              use_norm="weight_norm")).eval()
    _stream_onnx(ptcn, torch.randn(2, 3, 4), tmp_path / "ptcn.onnx", 2, 17, _chunkings(17, 2))
    encoder = nf_modules.TemporalConvolutionEncoder(3, 5, 2, [1, 2, 4], activation="ReLU").eval()
    _stream_onnx(encoder, torch.randn(2, 4, 3), tmp_path / "nf.onnx", 3, 19, _chunkings(19, 3), channels_last=True)
    stack = nn.ModuleList(tcnkernels.WaveNetBlock(6, 10, 7, 3, d, aux_channels=4) for d in (1, 2, 4)).eval()
    _stream_onnx(stack, torch.randn(2, 6, 4), tmp_path / "wavenet.onnx", 2, 21, _chunkings(21, 4), c_channels=4)


def test_what_cannot_export_is_refused_with_the_module_named(tmp_path):
    tcn = _tcn().train()
    with pytest.raises(ValueError, match=r"cannot export network\.0\.dropout1: it applies dropout"):
        tx.to_onnx(tcn, torch.randn(2, 3, 10), tmp_path / "t.onnx")
    with pytest.raises(ValueError, match="padding 'same' reads"):
        tx.to_onnx(_tcn(padding="same"), torch.randn(2, 3, 10), tmp_path / "t.onnx", streaming=True)
    with pytest.raises(TypeError, match="ExportedProgram"):
        tx.decompose(tcn)
    with pytest.raises(ValueError, match="3-D input"):
        tx.to_onnx(_tcn(), torch.randn(3, 10), tmp_path / "t.onnx")


def test_an_example_of_one_row_and_one_step_still_gives_dynamic_shapes(tmp_path):
    """Sizes 1 would be specialised by torch.export: to_onnx traces at two, the file takes any."""
    tcn = _tcn()
    _check_onnx(tcn, (torch.randn(1, 3, 1),), [(torch.randn(4, 3, 9),), (torch.randn(1, 3, 1),)],
                tmp_path / "tcn.onnx")


class _Decoder(nn.Module):
    """A Mamba-style decode layer: its conv state a buffer that causal_conv1d_update advances."""

    def __init__(self, pool, circular):
        super().__init__()
        torch.manual_seed(3)
        self.weight, self.bias = nn.Parameter(torch.randn(8, 4)), nn.Parameter(torch.randn(8))
        self.register_buffer("conv_state", torch.randn(4 if pool else 3, 8, 7 if circular else 6))
        self.pool, self.circular = pool, circular

    def forward(self, x, lengths):
        rows = torch.tensor([2, -1, 0], dtype=torch.int32) if self.pool else None  # -1: a padded row
        return tcnkernels.causal_conv1d_update(x, self.conv_state, self.weight, self.bias, "silu",
                                               lengths if self.circular else None, rows, dilation=2)


@pytest.mark.parametrize("pool, circular", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["shift", "pool", "circular", "pool-circular"])
def test_the_decode_update_exports_and_decomposes_with_its_state_write(pool, circular):
    """The in-place update exports (a buffer mutation); decompose turns it into ATen ops computing
    the new state, and the program's steps give the kernel's outputs and states."""
    eager, exported = _Decoder(pool, circular).eval(), _Decoder(pool, circular).eval()
    lengths = torch.tensor([5, 0, 9], dtype=torch.int32)
    with torch.no_grad():
        program = torch.export.export(exported, (torch.randn(3, 8, 1), lengths))
        assert "tcnkernels.causal_conv1d_update.default" in _ops(program)
        plain = tx.decompose(program)
        assert not any(op.startswith("tcnkernels.") or "auto_functionalized" in op for op in _ops(plain)), _ops(plain)
        assert list(plain.graph_signature.buffers_to_mutate.values()) == ["conv_state"]
        step = plain.module()
        for t in range(5):
            x = torch.randn(3, 8, 1)
            torch.testing.assert_close(step(x, lengths + t), eager(x, lengths + t), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(step.conv_state, eager.conv_state)


def _dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_the_files_name_their_dynamic_axes_batch_and_time(tmp_path):
    """Every shape in the files speaks of `batch` and `time`, not the exporter's symbols (s77)."""
    tcn = _tcn()
    tx.to_onnx(tcn, torch.randn(1, 3, 20), tmp_path / "tcn.onnx")
    graph = onnx.load(str(tmp_path / "tcn.onnx")).graph
    assert _dims(graph.input[0]) == ["batch", 3, "time"] and _dims(graph.output[0]) == ["batch", 6, "time"]
    tx.to_onnx(tcn, torch.randn(1, 3, 1), tmp_path / "step.onnx", streaming=True)
    graph = onnx.load(str(tmp_path / "step.onnx")).graph
    assert _dims(graph.input[0]) == ["batch", 3, "time"] and _dims(graph.output[0]) == ["batch", 6, "time"]
    assert [_dims(v)[0] for v in [*graph.input, *graph.output]] == ["batch"] * (2 * len(graph.input))
    symbols = {d.dim_param for v in [*graph.input, *graph.output, *graph.value_info]
               for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert symbols and not any(re.search(r"\bs\d+\b", name) for name in symbols), symbols


@pytest.mark.slow
def test_a_fitted_darts_tcn_model_exports_and_streams_in_onnxruntime(tmp_path):
    """Darts' module (its forward takes Darts' own batch object): exported as its predict step, and
    its streaming step ([N, n, C] in, [N, n, target_size, nr_params] out) equal to its forward."""
    from darts.models.forecasting import tcn_model
    torch.manual_seed(7)
    module = tcn_model._TCNModule(input_size=2, kernel_size=3, num_filters=4, num_layers=3, dilation_base=2,
                                  weight_norm=True, target_size=2, nr_params=1, target_length=4, dropout=0.1,
                                  input_chunk_length=16, output_chunk_length=4)
    tcnkernels.convert(module).eval()
    path = tmp_path / "darts.onnx"
    tx.to_onnx(module, torch.randn(2, 16, 2), path)
    session = onnxruntime.InferenceSession(str(path))
    x = torch.randn(5, 16, 2)
    with torch.no_grad():
        want = tx.DartsForecast(module)(x)
    assert want.shape == (5, 4, 2, 1)
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], want.numpy(), rtol=1e-5, atol=1e-5)
    _stream_onnx(module, torch.randn(2, 4, 2), tmp_path / "step.onnx", 3, 16, _chunkings(16, 5), channels_last=True,
                 whole=_DartsWhole(module))


class _DartsWhole(nn.Module):
    """Darts' forward at every step of the window (its training stage): what the steps must equal."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        from darts.models.forecasting.pl_forecasting_module import ModuleStage
        from darts.utils.data.torch_datasets.utils import PLModuleInput
        return self.module(PLModuleInput(past_target=x, stage=ModuleStage.TRAIN)).prediction
