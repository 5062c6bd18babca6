"""Exact streaming inference: a TCN advanced a few time steps at a time, with per-layer caches.

A causal conv's output at step t reads its input at t - j*dilation for j < K, so each conv keeps its
last (K-1)*dilation inputs and a new step costs O(layers * C^2 * K), whatever the history. The
concatenated outputs of `Streamer.step` over any chunking of a sequence equal the model's forward on
the whole sequence (eval mode), from a zero history (the forward's implicit zero padding).

The model is compiled once into a flat list of stages (conv, block, pointwise). Three steps run them:
  cpp     one call of the C++ step (csrc/stream_step.cpp) advances the whole network: each conv
          keeps a ring of its last (K-1)*dilation + 1 inputs, (B, slots, C_in), and a position;
  triton  one launch of stream_step_kernel (tcnkernels/ops/triton/stream_kernels.py) does the same
          on a GPU, its step counter on the device (no host synchronisation: CUDA-graph capturable);
  torch   PyTorch ops per conv on a (B, C_in, (K-1)*dilation) cache (any device and dtype).
`backend="auto"` takes the C++ step for fp32/fp64 CPU models and the Triton step for fp32/fp16/bf16
CUDA models it can express (the C++ helpers built, Triton usable), else the PyTorch step. All three
expose the same state (`state_dict`). Weight norm is folded when
the streamer is built and again only when a parameter changes (its version counter moves, or it is
replaced): the streamer follows the model.
"""
import functools
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ._native import native_ops
from .nn import TemporalBlock, TemporalConv1d, TemporalConvNet
from .ops import triton as triton_kernels
from .ops.activations import RELU, activation_of
from .zoo import is_pytorch_tcn_block, is_reference_block, self_padding, weight_norm_parameters

STEP_BACKENDS = ("auto", "cpp", "triton", "torch")
_VERSION = operator.attrgetter("_version")

# Layers that act on each time step alone: they stream as they are.
POINTWISE = (nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Dropout)
CPP_POINTWISE = (nn.Identity, nn.ReLU, nn.Dropout)  # those the C++ step runs (dropout only in eval)


class _Conv:
    """One causal conv: its module, taps, dilation, folded weight and the parameters it came from."""

    def __init__(self, conv, activation=None):
        if conv.stride != (1,) or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"cannot stream {conv}: only stride 1, groups 1, zero padding are causal convs here")
        self.module, self.K, self.dilation = conv, conv.kernel_size[0], conv.dilation[0]
        self.history = (self.K - 1) * self.dilation  # input steps the next output still reads
        if isinstance(conv, TemporalConv1d):
            if conv.pad_right:
                raise ValueError(f"cannot stream {conv}: its padding {conv.temporal_padding!r} reads "
                                 f"{conv.pad_right} future steps; the streamer runs causal convs (padding='causal')")
        elif self_padding(conv) is not None:  # pads its own input (pytorch-tcn's TemporalConv1d)
            if self_padding(conv) != (self.history, 0):
                raise ValueError(f"cannot stream {conv}: it pads {self_padding(conv)} (left, right), reading future "
                                 "steps; the streamer runs causal convs")
        elif conv.padding != (self.history,):
            raise ValueError(f"cannot stream {conv}: a plain Conv1d is causal only with padding (K-1)*dilation "
                             f"= {self.history} and a chomp, got padding {conv.padding}")
        if activation is None:
            act = activation_of(getattr(conv, "activation", None))[0]
            if act not in (None, RELU):
                raise ValueError(f"cannot stream {conv}: the streamer's steps fuse ReLU or no activation, not "
                                 f"{act.name}")
            activation = None if act is None else "relu"
        self.activation = activation
        self.c_in, self.c_out = conv.in_channels, conv.out_channels
        self.fold()

    def fold(self):
        """The effective weight (weight norm applied, legacy or parametrized) and bias, detached."""
        conv = self.module
        norm = weight_norm_parameters(conv)
        with torch.no_grad():
            weight = conv.weight if norm is None else torch._weight_norm(norm[1], norm[0], 0)
            self.weight = weight.detach().clone()
            self.bias = None if conv.bias is None else conv.bias.detach().contiguous()
            self.taps_major = self.weight.permute(0, 2, 1).contiguous()  # (C_out, K, C_in): the C++ step's
        self.sources = _owned_parameters(conv)

    def step(self, x, cache):
        """Outputs for the new steps x (B, C_in, n); `cache` (B, C_in, history) moves forward in place."""
        if self.history:
            window = torch.cat([cache, x], dim=2)
            cache.copy_(window[:, :, window.shape[2] - self.history:])
        else:
            window = x
        y = F.conv1d(window, self.weight, self.bias, dilation=self.dilation)
        return torch.relu(y) if self.activation == "relu" else y


def _owned_parameters(module):
    """(owner module, name, parameter) of every parameter under `module`."""
    return [(owner, name, p) for owner in module.modules() for name, p in owner._parameters.items() if p is not None]


def _pytorch_tcn_network(model):
    """pytorch-tcn's TCN whose forward is its blocks in a row (NCL, no skips, projection or output
    activation): its blocks, or None."""
    network = getattr(model, "network", None)
    if not isinstance(network, nn.ModuleList) or not hasattr(model, "use_skip_connections"):
        return None
    plain = (not model.use_skip_connections and getattr(model, "projection_out", 0) is None
             and getattr(model, "activation_out", 0) is None and getattr(model, "input_shape", None) == "NCL")
    if not plain or not all(is_pytorch_tcn_block(b) for b in network):
        raise ValueError(f"cannot stream this {type(model).__name__}: the streamer runs pytorch-tcn's TCN with "
                         "input_shape='NCL', ReLU, weight norm or no norm, and no skip connections, gate, "
                         "embeddings, output projection or output activation")
    return list(network)


class _Block:
    """A TemporalBlock (ours, the reference's or pytorch-tcn's): relu(D(relu(conv2(D(relu(conv1(x)))))) + res)."""

    def __init__(self, block):
        self.module = block
        if isinstance(block, TemporalBlock) and (
                getattr(block, "block_activation", RELU) != RELU or not getattr(block, "final_activation", True)
                or not getattr(block, "conv2_activation", True)):
            raise ValueError(f"cannot stream {type(block).__name__}: the streamer's steps run the reference block "
                             "(ReLU after each conv and after the residual)")
        activation = None if isinstance(block, TemporalBlock) else "relu"  # ours fuses the ReLUs into its convs
        self.conv1, self.conv2 = _Conv(block.conv1, activation), _Conv(block.conv2, activation)
        self.downsample = None if block.downsample is None else _Conv(block.downsample)
        if self.downsample is not None and self.downsample.K != 1:
            raise ValueError(f"cannot stream {type(block).__name__}: its downsample is not a 1x1 conv")
        self.convs = [c for c in (self.conv1, self.conv2, self.downsample) if c is not None]
        self.c_in, self.c_out = self.conv1.c_in, self.conv2.c_out

    def dropouts(self):
        return [self.module.dropout1, self.module.dropout2]

    def step(self, x, caches):
        out = self.conv2.step(self.conv1.step(x, caches[0]), caches[1])
        res = x if self.downsample is None else self.downsample.step(x, None)
        return torch.relu(out + res)


class _Pointwise:
    def __init__(self, module):
        self.module, self.convs, self.c_in, self.c_out = module, [], None, None

    def dropouts(self):
        return [self.module] if isinstance(self.module, nn.Dropout) else []

    def step(self, x, caches):
        return self.module(x)


class _ConvStage:
    def __init__(self, conv):
        self.conv = _Conv(conv)
        self.convs, self.c_in, self.c_out = [self.conv], self.conv.c_in, self.conv.c_out

    def dropouts(self):
        return []

    def step(self, x, caches):
        return self.conv.step(x, caches[0])


def _stages(model):
    """The model as a flat list of stages, or a ValueError naming what cannot stream."""
    if isinstance(model, TemporalConv1d):
        return [_ConvStage(model)]
    if isinstance(model, TemporalBlock) or is_reference_block(model) or is_pytorch_tcn_block(model):
        return [_Block(model)]
    if isinstance(model, nn.Sequential):
        return [stage for child in model for stage in _stages(child)]
    if isinstance(model, POINTWISE):
        return [_Pointwise(model)]
    children = dict(model.named_children())
    if isinstance(model, TemporalConvNet) or (list(children) == ["network"]
                                              and isinstance(children["network"], nn.Sequential)):
        return _stages(model.network)  # the authors' TemporalConvNet: forward(x) = self.network(x)
    blocks = _pytorch_tcn_network(model)
    if blocks is not None:
        return [_Block(block) for block in blocks]
    if isinstance(model, nn.Conv1d):
        raise ValueError(f"cannot stream {model}: a bare nn.Conv1d is not causal (use tcnkernels.CausalConv1d)")
    raise ValueError(f"cannot stream a {type(model).__name__}: the streamer knows CausalConv1d, TemporalBlock, "
                     "TemporalConvNet (ours, the reference's or pytorch-tcn's), nn.Sequential of them and pointwise "
                     "activations")


def history_slots(position, history, slots, device=None):
    """Ring slots holding a conv's last `history` inputs, oldest first, when `position` is the slot
    the next input goes to (the C++ and Triton steps' rings alike)."""
    return (position - history + torch.arange(history, device=device)) % slots


class Streamer:
    """Step a causal TCN through a sequence chunk by chunk, exactly.

        stream = tcnkernels.Streamer(model, batch_size=B)
        y = stream.step(x)       # x (B, C_in, n), n >= 1 new steps -> (B, C_out, n)
        stream.reset()           # every row; stream.reset([0, 3]) restarts those rows only
        state = stream.state_dict(); stream.load_state_dict(state)   # the caches

    `model`: a CausalConv1d, a TemporalBlock, a TemporalConvNet (ours or the authors'), an
    nn.Sequential of them with pointwise activations, or a model after `tcnkernels.convert`; in eval
    mode (or with dropout 0). Works in the model's dtype and on its device. The caches belong to the
    streamer; the model's parameters are read, and a change to them (an optimizer step, a
    load_state_dict) is picked up at the next step. `backend`: "auto", "cpp" (the C++ step: fp32 or
    fp64 on a CPU), "triton" (one kernel launch a step: fp32, fp16 or bf16 on a GPU, layers up to
    256 channels) or "torch" (PyTorch ops); `stream.backend` says which runs.
    """

    def __init__(self, model, batch_size, backend="auto"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Streamer expects an nn.Module, got {type(model).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if backend not in STEP_BACKENDS:
            raise ValueError(f"backend must be one of {STEP_BACKENDS}, got {backend!r}")
        self.model, self.batch_size = model, batch_size
        self.stages = _stages(model)
        self.convs = [conv for stage in self.stages for conv in stage.convs]
        if not self.convs:
            raise ValueError(f"{type(model).__name__} has no causal conv to stream")
        self._dropouts = [d for stage in self.stages for d in stage.dropouts()]
        self._check_mode()
        widths = [(s.c_in, s.c_out) for s in self.stages if s.c_in is not None]
        for (_, c_out), (c_in, _) in zip(widths, widths[1:]):
            if c_out != c_in:
                raise ValueError(f"cannot stream: a layer gives {c_out} channels to one that takes {c_in}")
        self.c_in, self.c_out = widths[0][0], widths[-1][1]
        first = self.convs[0].weight
        self.dtype, self.device = first.dtype, first.device
        self.backend = self._choose(backend)
        self._index = {id(c): i for i, c in enumerate(self.convs)}  # conv -> its place in self.convs
        self._watch()
        zeros = functools.partial(torch.zeros, dtype=self.dtype, device=self.device)
        if self.backend == "cpp":
            self._program = self._cpp_program()
            self._state = [zeros(batch_size, c.history + 1, c.c_in) if c.history else zeros(0) for c in self.convs]
            self._positions = torch.zeros(len(self.convs), dtype=torch.int64)
        elif self.backend == "triton":
            from .ops.stream_launch import TritonStream  # lazily: it needs triton, the other steps do not
            self._triton = TritonStream(self.convs, self._cpp_program()[0], batch_size, self.device)
            self._state = []
        else:
            self._state = [zeros(batch_size, c.c_in, c.history) if c.history else None for c in self.convs]
            self._stage_caches = [[self._state[self._index[id(c)]] for c in stage.convs] for stage in self.stages]

    def _choose(self, backend):
        if backend == "torch":
            return "torch"
        if backend == "auto":
            wanted = "triton" if self.device.type == "cuda" else "cpp"
            return wanted if self._unfit(wanted) is None else "torch"
        reason = self._unfit(backend)
        if reason is not None:
            raise ValueError(f"the {backend} streaming step cannot run this model: {reason}")
        return backend

    def _unfit(self, backend):
        """Why the cpp or triton step cannot run this model, or None."""
        if not all(isinstance(s, (_ConvStage, _Block)) or isinstance(s.module, CPP_POINTWISE) for s in self.stages):
            return "the model has a pointwise layer other than ReLU, Identity or Dropout"
        if backend == "cpp":
            if self.device.type != "cpu" or self.dtype not in (torch.float32, torch.float64):
                return f"it runs fp32 or fp64 CPU models, this one is {self.dtype} on {self.device}"
            return "the C++ helpers are not available (tcnkernels info says why)" if native_ops() is None else None
        if self.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return f"it runs fp32, fp16 or bf16 models, this one is {self.dtype}"
        reason = triton_kernels.unusable_reason(self.device)
        if reason is not None:
            return reason
        from .ops.stream_launch import MAX_CHANNELS, stream_channels  # lazily: it needs triton (importable here)
        if stream_channels(self.convs) > MAX_CHANNELS:
            return f"it keeps layers of up to {MAX_CHANNELS} channels in registers"
        return None

    def _cpp_program(self):
        """(stages as 4 ints each, dilations, relu flags) for the C++ step."""
        at, stages = self._index, []
        for s in self.stages:
            if isinstance(s, _ConvStage):
                stages += [0, at[id(s.conv)], -1, -1]
            elif isinstance(s, _Block):
                stages += [1, at[id(s.conv1)], at[id(s.conv2)], -1 if s.downsample is None else at[id(s.downsample)]]
            elif isinstance(s.module, nn.ReLU):
                stages += [2, -1, -1, -1]
        return stages, [c.dilation for c in self.convs], [int(c.activation == "relu") for c in self.convs]

    def _watch(self):
        """What `_follow_parameters` compares: every source parameter's slot, identity and version,
        as they are now (right after the folds)."""
        sources = [source for conv in self.convs for source in conv.sources]
        self._slots = ([owner._parameters for owner, _, _ in sources], [name for _, name, _ in sources])
        self._params = [p for _, _, p in sources]
        self._ids, self._versions = [id(p) for p in self._params], list(map(_VERSION, self._params))

    def _follow_parameters(self):
        """Refold every conv when a parameter changed in place or was replaced (rare: a fold is cheap).
        One C-level pass over every parameter per step (about 2 us for a paper network)."""
        if (list(map(_VERSION, self._params)) == self._versions
                and list(map(id, map(dict.get, *self._slots))) == self._ids):
            return False
        for conv in self.convs:
            conv.fold()
        self._watch()
        return True

    def _check_mode(self):
        for d in self._dropouts:
            if d.training and d.p > 0:
                raise ValueError("cannot stream a model in training mode with dropout > 0: call model.eval()")

    def step(self, x):
        """Advance every row by x.shape[2] steps: x (B, C_in, n) -> y (B, C_out, n)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[0] != self.batch_size or x.shape[1] != self.c_in or x.shape[2] < 1:
            raise ValueError(f"x must be (batch_size={self.batch_size}, C_in={self.c_in}, n >= 1), "
                             f"got shape {tuple(x.shape)}")
        if x.dtype != self.dtype or x.device != self.device:
            raise TypeError(f"x must be {self.dtype} on {self.device} (the model's), got {x.dtype} on {x.device}")
        self._check_mode()
        refolded = self._follow_parameters()
        with torch.no_grad():
            if self.backend == "triton":
                if refolded:
                    self._triton.pack()
                return self._triton.step(x, self.c_out)
            if self.backend == "cpp":
                stages, dilations, relu = self._program
                return native_ops().stream_step(x, [c.taps_major for c in self.convs], [c.bias for c in self.convs],
                                                self._state, self._positions, dilations, relu, stages)
            for stage, caches in zip(self.stages, self._stage_caches):
                x = stage.step(x, caches)
        return x

    def reset(self, indices=None):
        """Zero the history of every row, or of the rows in `indices` (ints, or a bool mask of B)."""
        rows = slice(None) if indices is None else self._rows(indices)
        if self.backend == "triton":
            self._triton.rings[rows] = 0
        for state in self._state:
            if state is not None and state.numel():
                state[rows] = 0

    def _rows(self, indices):
        rows = torch.as_tensor(indices, device=self.device)
        if rows.dtype == torch.bool:
            if rows.shape != (self.batch_size,):
                raise ValueError(f"a row mask must have shape ({self.batch_size},), got {tuple(rows.shape)}")
            return rows
        if rows.is_floating_point() or rows.dim() > 1:
            raise ValueError(f"indices must be row numbers or a bool mask, got {indices!r}")
        rows = rows.reshape(-1).long()
        if rows.numel() and (rows.min() < -self.batch_size or rows.max() >= self.batch_size):
            raise ValueError(f"row indices must be in [0, {self.batch_size}), got {indices!r}")
        return rows

    def _ring_slots(self, i):
        """The C++ ring slots of conv i's last `history` inputs, oldest first."""
        return history_slots(int(self._positions[i]), self.convs[i].history, self._state[i].shape[1])

    def _triton_slots(self, i):
        """The Triton step's ring slots of conv i's last `history` inputs, oldest first."""
        return history_slots(self._triton.position(i), self.convs[i].history, self._triton.slots[i], self.device)

    def state_dict(self):
        """{"<conv>": its last (K-1)*dilation inputs (B, C_in, (K-1)*dilation)}, plain tensors (copies),
        the same for both steps."""
        if self.backend == "cpp":
            return {str(i): self._state[i][:, self._ring_slots(i)].transpose(1, 2).contiguous()
                    for i, c in enumerate(self.convs) if c.history}
        if self.backend == "triton":
            return {str(i): self._triton.ring_view(i)[:, self._triton_slots(i), :c.c_in].transpose(1, 2)
                    .to(self.dtype).contiguous() for i, c in enumerate(self.convs) if c.history}
        return {str(i): cache.clone() for i, cache in enumerate(self._state) if cache is not None}

    def load_state_dict(self, state):
        shapes = {str(i): (self.batch_size, c.c_in, c.history) for i, c in enumerate(self.convs) if c.history}
        if not isinstance(state, dict) or set(state) != set(shapes):
            raise ValueError(f"a streamer state needs the keys {sorted(shapes)}, got "
                             f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        for key, shape in shapes.items():
            if not isinstance(state[key], torch.Tensor) or tuple(state[key].shape) != shape:
                raise ValueError(f"state[{key!r}] must be a tensor of shape {shape}")
        for key in shapes:
            i = int(key)
            if self.backend == "cpp":
                self._state[i][:, self._ring_slots(i)] = state[key].to(self.dtype).transpose(1, 2)
            elif self.backend == "triton":
                view = self._triton.ring_view(i)
                view[:, self._triton_slots(i), :self.convs[i].c_in] = state[key].float().transpose(1, 2)
            else:
                self._state[i].copy_(state[key])
