"""One streaming step as a pure function, for `tcnkernels.export.to_onnx(..., streaming=True)`.

`StreamingStep(model, batch_size)` is the PyTorch step of `tcnkernels.Streamer(model)` with its
caches made explicit: `forward(x, *states) -> (y, *new_states)` (a WaveNet stack: `forward(x, c,
*states) -> (y, skip, *new_states)`, without `c` when its blocks are unconditioned). There is one
state per causal conv that reads past steps, in the order the model runs them, named
`state.<the conv's qualified name in the model>`: `(B, C_in, (K - 1) * dilation)`, the conv's last
inputs, oldest first, zeros before the first step. A step of n >= 1 new columns reads
`cat(state, x)` and returns its last `(K - 1) * dilation` columns as the new state, so that
successive steps equal the model's forward over the whole window, at any batch size and chunking.
"""
import torch
from torch import nn
from torch.export import Dim

from .streaming import Streamer


class StreamingStep(nn.Module):
    """forward(x, [c,] *states) -> (y, [skip,] *new_states): see the module docstring."""

    def __init__(self, model, batch_size=1):
        super().__init__()
        stream = Streamer(model, batch_size, backend="torch")  # checks the model: causal, eval mode, known layers
        self.model = model  # a submodule: export reads its parameters as the program's
        self.__dict__["_stream"] = stream  # not a submodule: the stages are plain objects
        names = {id(m): name for name, m in model.named_modules()}
        self._stateful = [conv for conv in stream.convs if conv.history]
        self.state_names = [f"state.{names.get(id(conv.module), f'conv{i}')}" for i, conv in enumerate(self._stateful)]
        self.conditioned = stream.gated and any(stage.aux_channels for stage in stream.stages)

    def initial_states(self, batch_size, dtype=None, device=None):
        """The zero states of `batch_size` rows, in forward's order."""
        s = self._stream
        return [torch.zeros(batch_size, conv.c_in, conv.history, dtype=dtype or s.dtype, device=device or s.device)
                for conv in self._stateful]

    def forward(self, x, *inputs):
        s = self._stream
        c, states = (inputs[0], inputs[1:]) if self.conditioned else (None, inputs)
        channels_last, out_shape = s.layout
        if channels_last:
            x = x.transpose(1, 2)
        caches = [state.clone() for state in states]  # the stages advance their caches in place
        by_conv = {id(conv): cache for conv, cache in zip(self._stateful, caches)}
        skips = 0
        for stage in s.stages:
            stage_caches = [by_conv.get(id(conv)) for conv in stage.convs]
            if s.gated:
                x, skip = stage.step(x, stage_caches, c)
                skips = skips + skip
            else:
                x = stage.step(x, stage_caches)
        if s.gated:
            return (x, skips, *caches)
        if channels_last:
            x = x.transpose(1, 2)
            if out_shape is not None:
                x = x.reshape(*x.shape[:2], *out_shape)
        return (x, *caches)


def streaming_step_program(model, example):
    """(the ExportedProgram of one step, its example inputs, the ONNX input and output names) for
    `example`, a chunk in the model's own layout. Batch and chunk length are dynamic."""
    step = StreamingStep(model, example.shape[0])
    s = step._stream
    # 0 and 1 would be specialised: trace at two rows and two steps at least
    channels_last = s.layout.channels_last
    batch, length = max(2, example.shape[0]), max(2, example.shape[1 if channels_last else 2])
    shape = (batch, length, s.c_in) if channels_last else (batch, s.c_in, length)
    x = torch.zeros(shape, dtype=s.dtype, device=s.device)
    inputs = [x]
    B, T = Dim("batch"), Dim("time")
    shapes = [{0: B, 1 if channels_last else 2: T}]
    if step.conditioned:
        inputs.append(torch.zeros(batch, max(stage.aux_channels for stage in s.stages), length, dtype=s.dtype,
                                  device=s.device))
        shapes.append({0: B, 2: T})
    states = step.initial_states(batch)
    inputs += states
    shapes += [{0: B}] * len(states)
    with torch.no_grad():
        # forward(x, *inputs): the dynamic shapes of the varargs go in one tuple
        program = torch.export.export(step, tuple(inputs), dynamic_shapes=(shapes[0], tuple(shapes[1:])))
    heads = ["y", "skip"] if s.gated else ["y"]
    names = dict(input_names=["x", "c"][:1 + step.conditioned] + step.state_names,
                 output_names=heads + ["new_" + n for n in step.state_names],
                 axis_names=[{axis: dim.__name__ for axis, dim in axes.items()} for axes in shapes])
    return program, tuple(inputs), names
