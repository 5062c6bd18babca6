"""What every launcher shares: the device target, tile heuristics, alignment, and the one launch point.

Tiles are chosen from the shape with the static sm_90 profile (benchmarks/sass_profile.py); the
compile-only tier compiles every configuration these functions can return for sm_80 and sm_90.
Every kernel launch goes through `launch()`, by keyword: the static profiler, the host-overhead
benchmark and the tests swap that one function (`launches_replaced`) to record or stub launches.
Every kernel output is allocated by `new_output`. Nothing here reads back from the device.
"""
import contextlib
import dataclasses
import functools
import math

import torch

from . import triton as triton_kernels
from .triton import INTERPRETER

# Tests switch this on so every kernel output starts as NaN: an element a kernel forgets to write
# then fails the comparison instead of passing by luck with whatever memory held.
POISON_OUTPUTS = False


def new_output(like: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """A fresh buffer for a kernel to write (NaN-filled while tests poison outputs)."""
    out = like.new_empty(shape, dtype=dtype)
    if POISON_OUTPUTS:
        out.fill_(float("nan"))
    return out


def is_channel_last(t: torch.Tensor) -> bool:
    """A (B, C, L) channel-last view: its channel stride 1, with more than one channel."""
    return t.dim() == 3 and t.stride(1) == 1 and t.shape[1] > 1 and t.stride(2) != 1


def new_output_as(like: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """new_output in like's layout: (B, C, L) with L-major strides (a channel-last view) when like
    is one (is_channel_last), else contiguous."""
    B, C, L = shape
    if is_channel_last(like):
        return new_output(like, (B, L, C), dtype).transpose(1, 2)
    return new_output(like, shape, dtype)


@dataclasses.dataclass(frozen=True)
class Target:
    """What the launchers need to know of the device they launch on."""
    gpu: bool        # compiled kernels on a CUDA GPU (else Triton's interpreter on the CPU)
    sm_count: int    # streaming multiprocessors: sizes the weight-gradient chunks
    capability: int  # 90 for sm_90 (H100/H200), 80 for sm_80 (A100); 0 on the CPU


@functools.lru_cache(maxsize=None)
def _cuda_target(device_index):
    props = torch.cuda.get_device_properties(device_index)
    return Target(gpu=True, sm_count=props.multi_processor_count, capability=10 * props.major + props.minor)


def target_of(device):
    """The Target of a tensor's device (the static profiler swaps this for an H100's or A100's)."""
    return _cuda_target(device.index or 0) if device.type == "cuda" else Target(gpu=False, sm_count=1, capability=0)


def dtype_flags(dtype, target, allow_tf32):
    """Constexprs that depend on the dtype: (UPCAST, ACC_FP64, INPUT_PRECISION).

    16-bit tiles feed the tensor cores as they are (fp32 accumulation), except in the interpreter,
    where bf16 dots are wrong, so they are converted to fp32 first. fp32 follows cuDNN's TF32 switch
    (`allow_tf32`, torch.backends.cudnn.allow_tf32) so comparisons with nn.Conv1d are at equal precision.
    """
    upcast = dtype == torch.float32 or (INTERPRETER and dtype in (torch.float16, torch.bfloat16))
    tf32 = dtype == torch.float32 and target.gpu and allow_tf32
    return upcast, dtype == torch.float64, "tf32" if tf32 else "ieee"


def alignment(element_size, *values):
    """The largest power of two, up to 16 bytes' worth of elements, dividing every value."""
    g = 0
    for v in values:
        g = math.gcd(g, v)
    vector = 16 // element_size
    return math.gcd(g, vector) if g else vector


def needs_int64(*rows):
    """Whether some in-row offset (everything past the batch index) reaches 2^31: rows are
    ((C, L), (stride_c, stride_t)) pairs. Then the kernels use int64 in-row offsets."""
    return any(sum((n - 1) * s for n, s in zip(sizes, strides)) >= 2**31 for sizes, strides in rows)


def launch(kernel, grid, device_of, tensors, static):
    """kernel[grid](**tensors, **static), on `device_of`'s CUDA device: the tensors of this call, and
    the sizes, strides, constexprs and launch options its plan fixed. Triton launches on the current
    device, so switch to the tensor's only when it differs (cuda:1 while cuda:0 is current)."""
    if device_of.is_cuda and device_of.device.index != torch.cuda.current_device():
        with torch.cuda.device(device_of.device):
            kernel[grid](**tensors, **static)
    else:
        kernel[grid](**tensors, **static)


@contextlib.contextmanager
def launches_replaced(replacement, target=None):
    """Inside: every launch calls `replacement(kernel, grid, device_of, tensors, static)` instead (the
    arguments by name: this call's tensors, and the rest its plan fixed); the triton backend takes
    tensors on any device (CPU, meta),
    since nothing really launches; NaN poisoning is off (its fills are not the library's work);
    with `target` (a Target), the launchers plan for that GPU. Plans are cleared on the way in and
    out, since a plan depends on the target. For recording, counting and stubbing launches."""
    global launch, target_of, POISON_OUTPUTS
    saved = launch, target_of, POISON_OUTPUTS, triton_kernels._any_device
    launch = replacement
    if target is not None:
        target_of = lambda device: target  # noqa: E731
    POISON_OUTPUTS, triton_kernels._any_device = False, True
    clear_plans()
    try:
        yield
    finally:
        launch, target_of, POISON_OUTPUTS, triton_kernels._any_device = saved
        clear_plans()


PLAN_CACHES = []  # the launchers' lru_caches, registered with `plan_cache`


def plan_cache(fn):
    """A launcher's plan: cached per key (spec, shapes, strides, dtype, device), cleared when the
    target changes."""
    cached = functools.lru_cache(maxsize=4096)(fn)
    PLAN_CACHES.append(cached)
    return cached


def clear_plans():
    """Forget every plan (a test that changes what plans depend on clears them before and after)."""
    for cache in PLAN_CACHES:
        cache.cache_clear()


def shift_unit(K, dilation):
    """The dilation as the kernels receive it: a 1-tap conv never shifts, so its dilation is moot and
    passed as 16, a multiple of every ALIGN (the kernels divide by it and claim ALIGN divides it)."""
    return dilation if K > 1 else 16

