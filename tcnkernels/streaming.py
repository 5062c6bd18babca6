"""Exact streaming inference: a TCN advanced a few time steps at a time, with per-layer caches.

A causal conv's output at step t reads its input at t - j*dilation for j < K, so each conv keeps its
last (K-1)*dilation inputs and a new step costs O(layers * C^2 * K), whatever the history. The
concatenated outputs of `Streamer.step` over any chunking of a sequence equal the model's forward on
the whole sequence (eval mode), from a zero history (the forward's implicit zero padding).

The model is compiled once into a flat list of stages (conv, block, pointwise: stream_stages.py).
Three steps run them:
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
from torch import nn

from ._native import native_ops
from .ops import triton as triton_kernels
from .stream_stages import CONV, CPP_POINTWISE, LINEAR_BLOCK, RELU_STAGE, _Block, _ConvStage, model_stages

STEP_BACKENDS = ("auto", "cpp", "triton", "torch")
_VERSION = operator.attrgetter("_version")


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
    nn.Sequential of them with pointwise activations, pytorch-tcn's TCN, Darts' TCNModel (fitted or
    loaded: its `.model`, a _TCNModule), NeuralForecast's TemporalConvolutionEncoder, WaveNet stacks, as built or after
    `tcnkernels.convert` (tcnkernels/stream_stages.py lists the structures); in eval mode (or with
    dropout 0). A model whose forward takes [N, T, C] is stepped in that layout (`stream.layout`).
    Works in the model's dtype and on its device. The caches belong to the
    streamer; the model's parameters are read, and a change to them (an optimizer step, a
    load_state_dict) is picked up at the next step. `backend`: "auto", "cpp" (the C++ step: fp32 or
    fp64 on a CPU), "triton" (one kernel launch a step: fp32, fp16 or bf16 on a GPU, layers up to
    256 channels) or "torch" (PyTorch ops); `stream.backend` says which runs.
    """

    def __init__(self, model, batch_size, backend="auto"):
        if not isinstance(model, nn.Module) and hasattr(model, "model") and hasattr(model, "fit"):
            # a Darts forecasting model (TCNModel): its trained torch module is `.model`
            if not isinstance(model.model, nn.Module):
                raise ValueError(f"this {type(model).__name__} has no torch module yet: fit or load it first")
            model = model.model
        if not isinstance(model, nn.Module):
            raise TypeError(f"Streamer expects an nn.Module, got {type(model).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if backend not in STEP_BACKENDS:
            raise ValueError(f"backend must be one of {STEP_BACKENDS}, got {backend!r}")
        self.model, self.batch_size = model, batch_size
        self.stages, self.layout = model_stages(model)
        gated = [getattr(stage, "gated", False) for stage in self.stages]
        self.gated = any(gated)  # a WaveNet stack: step(x, c) -> (x, the sum of the blocks' skips)
        if self.gated and not all(gated):
            raise ValueError("cannot stream WaveNet blocks mixed with other layers: stream the WaveNet stack alone")
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
        torch_only = next((s.torch_only for s in self.stages if getattr(s, "torch_only", None)), None)
        if torch_only:
            return f"{torch_only} run on the PyTorch step"
        if not all(isinstance(s, (_ConvStage, _Block)) or isinstance(s.module, CPP_POINTWISE) for s in self.stages):
            return "the model has a pointwise layer other than ReLU, Identity or Dropout"
        if backend == "cpp":
            if self.device.type != "cpu" or self.dtype not in (torch.float32, torch.float64):
                return f"it runs fp32 or fp64 CPU models, this one is {self.dtype} on {self.device}"
            return "the C++ helpers are not available (tcnkernels info says why)" if native_ops() is None else None
        if any(getattr(s, "kind", None) == LINEAR_BLOCK for s in self.stages):
            # One more branch in the kernel's block stage made it spill on sm_80 (static profile)
            return "Darts' blocks (no ReLU after the residual) run on the C++ and PyTorch steps"
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
                stages += [CONV, at[id(s.conv)], -1, -1]
            elif isinstance(s, _Block):
                stages += [s.kind, at[id(s.conv1)], at[id(s.conv2)],
                           -1 if s.downsample is None else at[id(s.downsample)]]
            elif isinstance(s.module, nn.ReLU):
                stages += [RELU_STAGE, -1, -1, -1]
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
        for d in self._dropouts:  # dropouts (Darts' MonteCarloDropout: on at predict time too) and RReLU
            if isinstance(d, nn.RReLU) and d.training:
                raise ValueError("cannot stream a model in training mode with RReLU (random slopes): call model.eval()")
            if isinstance(d, nn.modules.batchnorm._BatchNorm):
                if d.training:
                    raise ValueError("cannot stream a batch norm in training mode (it normalises with the whole "
                                     "sequence's statistics): call model.eval()")
                continue
            if getattr(d, "mc_dropout_enabled", d.training) and getattr(d, "p", 0) > 0:
                raise ValueError("cannot stream a model whose dropout > 0 is active (training mode, or Darts' "
                                 "mc_dropout): call model.eval()")

    def step(self, x, c=None):
        """Advance every row by n steps: x (B, C_in, n) -> y (B, C_out, n), or in the model's own layout
        for a channel-last model ([N, T, C]: x (B, n, C_in) -> (B, n, C_out), Darts' viewed as
        (B, n, target_size, nr_params)). A WaveNet stack takes the conditioning chunk c (B, aux, n)
        (or None, unconditioned, as its blocks allow) and returns (x, the sum of its blocks' skips)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if c is not None:
            self._check_conditioning(x, c)
        channels_last, out_shape = self.layout
        batch, channels = f"batch_size={self.batch_size}", f"C_in={self.c_in}"
        expected = f"({batch}, n >= 1, {channels})" if channels_last else f"({batch}, {channels}, n >= 1)"
        if x.dim() == 3 and channels_last:
            x = x.transpose(1, 2)  # a view: the steps read any strides
        if x.dim() != 3 or x.shape[0] != self.batch_size or x.shape[1] != self.c_in or x.shape[2] < 1:
            shape = tuple(x.transpose(1, 2).shape) if x.dim() == 3 and channels_last else tuple(x.shape)
            raise ValueError(f"x must be {expected}, got shape {shape}")
        if x.dtype != self.dtype or x.device != self.device:
            raise TypeError(f"x must be {self.dtype} on {self.device} (the model's), got {x.dtype} on {x.device}")
        self._check_mode()
        if self.gated:
            return self._advance_gated(x, c)
        y = self._advance(x)
        if not channels_last:
            return y
        y = y.transpose(1, 2)
        return y if out_shape is None else y.reshape(*y.shape[:2], *out_shape)

    def _check_conditioning(self, x, c):
        if not self.gated:
            raise ValueError("c is the conditioning of a WaveNet stack; this model takes none")
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c must be a torch.Tensor or None, got {type(c).__name__}")
        aux = {stage.aux_channels for stage in self.stages}
        if aux != {c.shape[1] if c.dim() == 3 else -1} or c.shape[0] != x.shape[0] or c.shape[2] != x.shape[-1]:
            raise ValueError(f"c must be (batch_size={self.batch_size}, aux_channels={max(aux)}, n) like x's n, with "
                             f"every block conditioned, got shape {tuple(c.shape)}")
        if c.dtype != self.dtype or c.device != self.device:
            raise TypeError(f"c must be {self.dtype} on {self.device} (the model's), got {c.dtype} on {c.device}")

    def _advance_gated(self, x, c):
        self._follow_parameters()
        skips = 0
        with torch.no_grad():
            for stage, caches in zip(self.stages, self._stage_caches):
                x, skip = stage.step(x, caches, c)
                skips = skips + skip
        return x, skips

    def _advance(self, x):
        """Every step of the chosen backend on channel-first x (B, C_in, n)."""
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
