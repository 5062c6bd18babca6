// The streaming step on the CPU: one call advances a whole TCN (causal convs and residual blocks)
// by n time steps for every row, caches included. Built just in time by tcnkernels/_native.py and
// registered as torch.ops.tcnkernels_cpu.stream_step; tcnkernels/streaming.py describes the network
// and keeps the state, and its PyTorch step computes the same thing.
//
// Each conv with history H = (K-1)*dilation keeps a ring of its last H+1 inputs per row,
// (B, H+1, C_in), channels contiguous; positions[c] is the slot the next input goes to (shared by
// the rows: they advance together). An output step gathers the K taps (slot p - (K-1-k)*dilation)
// into one contiguous vector of K*C_in and takes its dot product with each row of the weight,
// prepared as (C_out, K, C_in): contiguous `omp simd` loops, 4 batch rows per weight load. The
// network runs stage by stage (all rows through one stage, rows split across threads), so a
// stage's weights stay in cache. From kGemmBatch rows on, each conv step is instead one ATen GEMM
// over the rows' gathered taps (the BLAS beats the hand loops there).
//
// stages: 4 ints per stage, [kind, a, b, c] with conv indices a, b, c (-1: none):
//   kind 0: conv a (ReLU if relu[a]);  kind 1: block relu(conv b(conv a(x)) + (x or conv c(x)));
//   kind 2: ReLU;  kind 3: block conv b(conv a(x)) + (x or conv c(x)), no ReLU after the sum (Darts').
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kRows = 4;  // rows computed together: each weight element loaded once for 4 rows
constexpr int64_t kGemmBatch = 128;  // rows from which each conv step is one BLAS GEMM (measured: the
                                     // row groups win at 64 rows, the GEMMs at 128 and 1024)

template <typename T>
struct Conv {
  const T* weight;  // (C_out, K, C_in)
  const T* bias;    // (C_out) or nullptr
  T* ring;          // (B, S, C_in), S = history + 1 (nullptr for a 1x1 conv)
  int64_t c_in, c_out, K, dilation, slots, position;
  bool relu;
};

// One step t of `count` (<= kRows) consecutive rows starting at row b: x[r] (C_in) is row r's input,
// already pushed into its ring; out[r] (C_out) receives the conv's output, bias and ReLU included.
template <typename T>
void conv_rows(const Conv<T>& conv, int64_t b, int64_t count, int64_t t, const T* const* x, T* const* out, T* taps) {
  const int64_t n = conv.K * conv.c_in;
  const T* src[kRows];
  for (int64_t r = 0; r < count; ++r) {
    if (conv.ring == nullptr) {  // 1x1: the input itself
      src[r] = x[r];
      continue;
    }
    const T* ring_row = conv.ring + (b + r) * conv.slots * conv.c_in;
    const int64_t p = (conv.position + t) % conv.slots;
    T* gathered = taps + r * n;
    for (int64_t k = 0; k < conv.K; ++k) {
      const int64_t slot = ((p - (conv.K - 1 - k) * conv.dilation) % conv.slots + conv.slots) % conv.slots;
      std::copy_n(ring_row + slot * conv.c_in, conv.c_in, gathered + k * conv.c_in);
    }
    src[r] = gathered;
  }
  for (int64_t o = 0; o < conv.c_out; ++o) {
    const T* w = conv.weight + o * n;
    T acc[kRows] = {};
    if (count == kRows) {
      T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      const T *s0 = src[0], *s1 = src[1], *s2 = src[2], *s3 = src[3];
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (int64_t i = 0; i < n; ++i) {
        const T wi = w[i];
        a0 += wi * s0[i];
        a1 += wi * s1[i];
        a2 += wi * s2[i];
        a3 += wi * s3[i];
      }
      acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
    } else {
      for (int64_t r = 0; r < count; ++r) {
        T a = 0;
        const T* sr = src[r];
#pragma omp simd reduction(+ : a)
        for (int64_t i = 0; i < n; ++i) a += w[i] * sr[i];
        acc[r] = a;
      }
    }
    const T bias = conv.bias != nullptr ? conv.bias[o] : T(0);
    for (int64_t r = 0; r < count; ++r) {
      const T v = acc[r] + bias;
      out[r][o] = conv.relu && v < T(0) ? T(0) : v;
    }
  }
}

template <typename T>
inline void push(const Conv<T>& conv, int64_t b, int64_t count, int64_t t, const T* const* x) {
  if (conv.ring == nullptr) return;
  const int64_t p = (conv.position + t) % conv.slots;
  for (int64_t r = 0; r < count; ++r)
    std::copy_n(x[r], conv.c_in, conv.ring + ((b + r) * conv.slots + p) * conv.c_in);
}

// One stage for rows [b0, b1) over n steps: rows hold (n, channels) packed in n * width elements,
// read from `cur`, written to `nxt`. Stage by stage, so one stage's weights stay in cache while
// every row passes through it.
template <typename T>
void run_stage(const std::vector<Conv<T>>& convs, const int64_t* stage, int64_t b0, int64_t b1, int64_t n,
               const T* cur, T* nxt, int64_t width, int64_t max_taps, int64_t c_cur) {
  std::vector<T> scratch((kRows * max_taps + 2 * kRows) * width);
  T* taps = scratch.data();
  T* mid = taps + kRows * max_taps * width;  // a block's out1, kRows rows of one step
  T* res = mid + kRows * width;              // a block's downsampled residual
  const Conv<T>& a = convs[stage[1]];
  for (int64_t b = b0; b < b1; b += kRows) {
    const int64_t count = std::min(kRows, b1 - b);
    for (int64_t t = 0; t < n; ++t) {
      const T* x[kRows];
      T* y[kRows];
      T* m[kRows];
      T* d[kRows];
      for (int64_t r = 0; r < count; ++r) {
        x[r] = cur + (b + r) * n * width + t * c_cur;
        m[r] = mid + r * width;
        d[r] = res + r * width;
      }
      if (stage[0] == 0) {
        for (int64_t r = 0; r < count; ++r) y[r] = nxt + (b + r) * n * width + t * a.c_out;
        push(a, b, count, t, x);
        conv_rows(a, b, count, t, x, y, taps);
        continue;
      }
      const Conv<T>& c2 = convs[stage[2]];
      for (int64_t r = 0; r < count; ++r) y[r] = nxt + (b + r) * n * width + t * c2.c_out;
      push(a, b, count, t, x);
      conv_rows(a, b, count, t, x, m, taps);
      push(c2, b, count, t, const_cast<const T* const*>(m));
      conv_rows(c2, b, count, t, const_cast<const T* const*>(m), y, taps);
      if (stage[3] >= 0) conv_rows(convs[stage[3]], b, count, t, x, d, taps);
      for (int64_t r = 0; r < count; ++r) {
        const T* residual = stage[3] >= 0 ? d[r] : x[r];
        if (stage[0] == 1) {
          for (int64_t o = 0; o < c2.c_out; ++o) y[r][o] = std::max(y[r][o] + residual[o], T(0));
        } else {
          for (int64_t o = 0; o < c2.c_out; ++o) y[r][o] += residual[o];
        }
      }
    }
  }
}

// Large batches: each conv of each step as one GEMM through ATen's BLAS, the K taps of every row
// gathered first; out (B, C_out) may be a strided view (rows n * width apart).
void gemm_conv(const at::Tensor& w, const std::optional<at::Tensor>& bias, const at::Tensor& ring, int64_t dilation,
               int64_t step, bool relu, const at::Tensor& x, at::Tensor out) {
  const int64_t B = x.size(0), c_out = w.size(0), K = w.size(1), c_in = w.size(2);
  at::Tensor taps = x;
  if (ring.numel() > 0) {
    const int64_t slots = ring.size(1), p = step % slots;
    ring.select(1, p).copy_(x);
    taps = at::empty({B, K, c_in}, x.options());
    for (int64_t k = 0; k < K; ++k)
      taps.select(1, k).copy_(ring.select(1, ((p - (K - 1 - k) * dilation) % slots + slots) % slots));
    taps = taps.view({B, K * c_in});
  }
  const at::Tensor w2 = w.view({c_out, K * c_in}).t();
  if (bias.has_value()) {
    at::addmm_out(out, *bias, taps, w2);
  } else {
    at::mm_out(out, taps, w2);
  }
  if (relu) out.clamp_min_(0);
}

at::Tensor stream_step(const at::Tensor& x, at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases,
                       at::TensorList rings, const at::Tensor& positions, at::IntArrayRef dilations,
                       at::IntArrayRef relu, at::IntArrayRef stages_ref) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu(), "stream_step: x must be a 3-D CPU tensor");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.is_contiguous() &&
                  positions.numel() == static_cast<int64_t>(weights.size()),
              "stream_step: one int64 position per conv");
  TORCH_CHECK(biases.size() == weights.size() && rings.size() == weights.size() &&
                  dilations.size() == weights.size() && relu.size() == weights.size(),
              "stream_step: one bias, ring, dilation and relu flag per conv");
  const int64_t B = x.size(0), c_in0 = x.size(1), n = x.size(2);
  const std::vector<int64_t> stages(stages_ref.begin(), stages_ref.end());
  int64_t width = c_in0, max_taps = 1, c_last = c_in0;
  for (const at::Tensor& w : weights) {
    TORCH_CHECK(w.dim() == 3 && w.is_contiguous() && w.scalar_type() == x.scalar_type(),
                "stream_step: weights must be contiguous (C_out, K, C_in) in x's dtype");
    width = std::max({width, w.size(0), w.size(2)});
    max_taps = std::max(max_taps, w.size(1));
  }
  for (size_t s = 0; s < stages.size(); s += 4) {
    if (stages[s] == 0) c_last = weights[stages[s + 1]].size(0);
    if (stages[s] == 1 || stages[s] == 3) c_last = weights[stages[s + 2]].size(0);
  }
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_step", [&] {
    using T = scalar_t;
    std::vector<Conv<T>> convs;
    int64_t* pos = positions.data_ptr<int64_t>();
    for (size_t i = 0; i < weights.size(); ++i) {
      const std::optional<at::Tensor> bias = biases.get(i);
      const bool has_ring = rings[i].numel() > 0;
      TORCH_CHECK(!has_ring || (rings[i].is_contiguous() && rings[i].scalar_type() == x.scalar_type() &&
                                rings[i].size(0) == B),
                  "stream_step: rings must be contiguous (B, slots, C_in) in x's dtype");
      TORCH_CHECK(!bias.has_value() || (bias->is_contiguous() && bias->scalar_type() == x.scalar_type()),
                  "stream_step: biases must be contiguous in x's dtype");
      convs.push_back(Conv<T>{weights[i].data_ptr<T>(), bias.has_value() ? bias->data_ptr<T>() : nullptr,
                              has_ring ? rings[i].data_ptr<T>() : nullptr, weights[i].size(2), weights[i].size(0),
                              weights[i].size(1), dilations[i], has_ring ? rings[i].size(1) : 1, pos[i],
                              relu[i] != 0});
    }
    const at::Tensor packed = x.transpose(1, 2).contiguous();  // (B, n, C_in): time-major rows
    at::Tensor io = at::empty({B, n, width}, x.options());
    at::Tensor spare = at::empty({B, n, width}, x.options());
    T* cur = io.data_ptr<T>();
    T* nxt = spare.data_ptr<T>();
    const T* x_ptr = packed.data_ptr<T>();
    at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) std::copy_n(x_ptr + b * n * c_in0, n * c_in0, cur + b * n * width);
    });
    int64_t c_cur = c_in0;
    for (size_t s = 0; s < stages.size(); s += 4) {
      if (stages[s] == 2) {  // ReLU in place
        at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b)
            for (int64_t i = 0; i < n * c_cur; ++i) cur[b * n * width + i] = std::max(cur[b * n * width + i], T(0));
        });
        continue;
      }
      if (B >= kGemmBatch) {
        const int64_t* st = stages.data() + s;
        auto rows = [&](T* base, int64_t t, int64_t c) {
          return at::from_blob(base + t * c, {B, c}, {n * width, 1}, x.options());
        };
        for (int64_t t = 0; t < n; ++t) {
          const at::Tensor x_t = rows(cur, t, c_cur);
          auto conv = [&](int64_t i, const at::Tensor& in, const at::Tensor& out) {
            gemm_conv(weights[i], biases.get(i), rings[i], dilations[i], pos[i] + t, relu[i] != 0, in, out);
          };
          if (st[0] == 0) {
            conv(st[1], x_t, rows(nxt, t, weights[st[1]].size(0)));
            continue;
          }
          const at::Tensor mid = at::empty({B, weights[st[1]].size(0)}, x.options());
          conv(st[1], x_t, mid);
          const at::Tensor y = rows(nxt, t, weights[st[2]].size(0));
          conv(st[2], mid, y);
          at::Tensor res = x_t;
          if (st[3] >= 0) {
            res = at::empty({B, weights[st[3]].size(0)}, x.options());
            conv(st[3], x_t, res);
          }
          y.add_(res);
          if (st[0] == 1) y.clamp_min_(0);
        }
      } else {
        // grain: a few row groups per task, so two or more threads only split batches worth it
        at::parallel_for(0, B, 4 * kRows, [&](int64_t b0, int64_t b1) {
          run_stage<T>(convs, stages.data() + s, b0, b1, n, cur, nxt, width, max_taps, c_cur);
        });
      }
      c_cur = weights[stages[s] == 0 ? stages[s + 1] : stages[s + 2]].size(0);
      std::swap(cur, nxt);
    }
    const at::Tensor result = cur == io.data_ptr<T>() ? io : spare;
    for (size_t i = 0; i < convs.size(); ++i) pos[i] = (pos[i] + n) % convs[i].slots;
    // each row's (n, c_last) result sits at the start of its n * width elements
    out = result.view({B, n * width}).narrow(1, 0, n * c_last).view({B, n, c_last}).transpose(1, 2).contiguous();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tcnkernels_cpu, m) {
  m.def("stream_step(Tensor x, Tensor[] weights, Tensor?[] biases, Tensor(a!)[] rings, Tensor(b!) positions, "
        "int[] dilations, int[] relu, int[] stages) -> Tensor");
}

TORCH_LIBRARY_IMPL(tcnkernels_cpu, CPU, m) { m.impl("stream_step", &stream_step); }
