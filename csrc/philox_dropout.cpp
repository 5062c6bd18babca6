// Dropout keep-masks on the CPU, bit-identical to the Triton kernels' `tl.randint(seed, offset)`
// (Philox4x32, 10 rounds, counter (offset_lo, offset_hi, 0, 0), key (seed_lo, seed_hi)), so that a
// model gives the same result on every backend. Built just in time by tcnkernels/_native.py and
// registered as torch.ops.tcnkernels_cpu.philox_keep_mask; the pure-PyTorch fallback in
// tcnkernels/ops/reference.py computes the same bits (about 25x slower).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

namespace {

constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;

// The first 32-bit output of Philox4x32-10 for one counter.
inline uint32_t philox_c0(uint64_t seed, uint64_t offset) {
  uint32_t c0 = static_cast<uint32_t>(offset), c1 = static_cast<uint32_t>(offset >> 32), c2 = 0, c3 = 0;
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
  return c0;
}

// keep[i] = philox_c0(seed, first_offset + i) >= threshold, for i in [0, count).
at::Tensor philox_keep_mask(const at::Tensor& seed, int64_t first_offset, int64_t count, int64_t threshold) {
  TORCH_CHECK(seed.device().is_cpu() && seed.numel() == 1, "philox_keep_mask: seed must be one CPU integer");
  TORCH_CHECK(count >= 0 && threshold >= 0 && threshold <= (int64_t{1} << 32), "philox_keep_mask: bad arguments");
  const uint64_t key = static_cast<uint64_t>(seed.item<int64_t>());
  at::Tensor keep = at::empty({count}, at::TensorOptions().dtype(at::kBool));
  bool* out = keep.data_ptr<bool>();
  const uint64_t base = static_cast<uint64_t>(first_offset);
  at::parallel_for(0, count, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[i] = static_cast<int64_t>(philox_c0(key, base + static_cast<uint64_t>(i))) >= threshold;
    }
  });
  return keep;
}

}  // namespace

TORCH_LIBRARY(tcnkernels_cpu, m) {
  m.def("philox_keep_mask(Tensor seed, int first_offset, int count, int threshold) -> Tensor");
}

TORCH_LIBRARY_IMPL(tcnkernels_cpu, CPU, m) { m.impl("philox_keep_mask", &philox_keep_mask); }
