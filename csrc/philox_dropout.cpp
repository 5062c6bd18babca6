// Dropout keep-masks on the CPU, bit-identical to the Triton kernels' `tl.randint4x(seed, counter)`
// (Philox4x32, 10 rounds, counter (counter_lo, counter_hi, 0, 0), key (seed_lo, seed_hi)), so that
// a model gives the same result on every backend. Step t of row r takes draw t % 4 of counter
// r * ceil(L/4) + t / 4 (channel mode: draw 0 of counter r). Built just in time by
// tcnkernels/_native.py and registered as torch.ops.tcnkernels_cpu.philox_keep_mask; the
// pure-PyTorch fallback in tcnkernels/ops/reference.py computes the same bits, much slower.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;

// The four 32-bit outputs of Philox4x32-10 for one counter.
inline void philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t pb = static_cast<uint64_t>(kRoundB) * c2;
    const uint64_t pa = static_cast<uint64_t>(kRoundA) * c0;
    const uint32_t next0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
    const uint32_t next2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(pb);
    c3 = static_cast<uint32_t>(pa);
    c0 = next0;
    c2 = next2;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// keep (rows, L): step t of row r kept iff draw t % 4 of counter r * ceil(L/4) + t / 4 >= threshold;
// channel mode, keep (rows,): draw 0 of counter r.
at::Tensor philox_keep_mask(const at::Tensor& seed, int64_t rows, int64_t length, int64_t threshold, bool channel) {
  TORCH_CHECK(seed.device().is_cpu() && seed.numel() == 1, "philox_keep_mask: seed must be one CPU integer");
  TORCH_CHECK(rows >= 0 && length >= 0 && threshold >= 0 && threshold <= (int64_t{1} << 32),
              "philox_keep_mask: bad arguments");
  const uint64_t key = static_cast<uint64_t>(seed.item<int64_t>());
  const int64_t steps = channel ? 1 : length, quads = (length + 3) / 4;
  at::Tensor keep = at::empty({rows, steps}, at::TensorOptions().dtype(at::kBool));
  bool* out = keep.data_ptr<bool>();
  at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(steps, 1)), [&](int64_t begin,
                                                                                                int64_t end) {
    uint32_t draws[4];
    for (int64_t r = begin; r < end; ++r) {
      bool* row = out + r * steps;
      if (channel) {
        philox4x32(key, static_cast<uint64_t>(r), draws);
        row[0] = static_cast<int64_t>(draws[0]) >= threshold;
        continue;
      }
      for (int64_t q = 0; q < quads; ++q) {
        philox4x32(key, static_cast<uint64_t>(r * quads + q), draws);
        for (int64_t j = 0; j < 4 && 4 * q + j < length; ++j) {
          row[4 * q + j] = static_cast<int64_t>(draws[j]) >= threshold;
        }
      }
    }
  });
  return keep;
}

}  // namespace

TORCH_LIBRARY(tcnkernels_cpu, m) {
  m.def("philox_keep_mask(Tensor seed, int rows, int length, int threshold, bool channel) -> Tensor");
}

TORCH_LIBRARY_IMPL(tcnkernels_cpu, CPU, m) { m.impl("philox_keep_mask", &philox_keep_mask); }
