// CPU kernels of MFM 2/1 and MFM 3/2 (forward, forward with selection mask, backward).
//
// A contiguous input is viewed as (outer, parts, len) (see common.h): output element
// (o, j) of MFM 2/1 compares x[o, 0, j] with x[o, 1, j]. The loops run over the flat
// output index, split across threads by at::parallel_for; the inner loops are
// branch-free so the compiler vectorises them (and target_clones adds AVX2/AVX-512
// versions chosen at load time).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <type_traits>

#include "common.h"
#include "cpu/keys.h"
#include "cpu/simd.h"
#include "select.h"

namespace lightface {
namespace {

constexpr int64_t kGrain = 16384;

// Calls fn(o, j, count) for consecutive runs of the flat range [begin, end) of an
// (outer, len) index space, each run inside one row o.
template <typename F>
inline void for_each_run(int64_t begin, int64_t end, int64_t len, const F& fn) {
  int64_t o = begin / len, j = begin % len;
  for (int64_t i = begin; i < end;) {
    const int64_t count = std::min(len - j, end - i);
    fn(o, j, i, count);
    i += count;
    j = 0;
    ++o;
  }
}

// ---- MFM 2/1 ----------------------------------------------------------------------------

template <typename scalar_t, bool kMask, typename T = typename Rank<scalar_t>::T>
LIGHTFACE_SIMD_CLONES void mfm2_run(const T* __restrict a, const T* __restrict b, T* __restrict y,
                                    uint8_t* __restrict m, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const T va = a[k], vb = b[k];
    const bool second = beats(Rank<scalar_t>::key(va), Rank<scalar_t>::key(vb));
    y[k] = second ? vb : va;
    if constexpr (kMask) m[k] = static_cast<uint8_t>(second);
  }
}

template <typename T>
LIGHTFACE_SIMD_CLONES void mfm2_backward_run(const T* __restrict g, const uint8_t* __restrict m,
                                             T* __restrict ga, T* __restrict gb, int64_t n) {
  const T zero(0);  // +0 (also as float16 / bfloat16 bits)
  for (int64_t k = 0; k < n; ++k) {
    const T v = g[k];
    const bool second = m[k] != 0;
    ga[k] = second ? zero : v;
    gb[k] = second ? v : zero;
  }
}

template <bool kMask>
std::tuple<at::Tensor, at::Tensor> mfm2_impl(const at::Tensor& input, int64_t dim) {
  const MfmForward operands = mfm_forward_operands(input, dim, 2, kMask, "mfm");
  const at::Tensor &x = operands.x, &out = operands.out, &mask = operands.mask;
  const SplitGeometry g = operands.g;
  if (out.numel() == 0) return {out, mask};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lightface_mfm_cpu", [&] {
    const auto* px = loop_data<scalar_t>(x);
    auto* py = loop_data_mut<scalar_t>(out);
    uint8_t* pm = kMask ? mask.mutable_data_ptr<uint8_t>() : nullptr;
    const int64_t len = g.len;
    at::parallel_for(0, g.outer * len, kGrain, [&](int64_t begin, int64_t end) {
      for_each_run(begin, end, len, [&](int64_t o, int64_t j, int64_t i, int64_t count) {
        const auto* a = px + o * 2 * len + j;
        mfm2_run<scalar_t, kMask>(a, a + len, py + i, kMask ? pm + i : nullptr, count);
      });
    });
  });
  return {out, mask};
}

at::Tensor mfm_cpu(const at::Tensor& x, int64_t dim) { return std::get<0>(mfm2_impl<false>(x, dim)); }

std::tuple<at::Tensor, at::Tensor> mfm_forward_cpu(const at::Tensor& x, int64_t dim) {
  return mfm2_impl<true>(x, dim);
}

at::Tensor mfm_backward_cpu(const at::Tensor& grad_in, const at::Tensor& mask_in, int64_t dim) {
  const MfmBackward operands = mfm_backward_operands(grad_in, mask_in, dim, 2, "mfm_backward");
  const at::Tensor &grad = operands.grad, &mask = operands.mask, &out = operands.out;
  const SplitGeometry g = operands.g;
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "lightface_mfm_backward_cpu", [&] {
    const auto* pg = loop_data<scalar_t>(grad);
    const uint8_t* pm = mask.const_data_ptr<uint8_t>();
    auto* po = loop_data_mut<scalar_t>(out);
    const int64_t len = g.len;
    at::parallel_for(0, g.outer * len, kGrain, [&](int64_t begin, int64_t end) {
      for_each_run(begin, end, len, [&](int64_t o, int64_t j, int64_t i, int64_t count) {
        auto* ga = po + o * 2 * len + j;
        mfm2_backward_run(pg + i, pm + i, ga, ga + len, count);
      });
    });
  });
  return out;
}

// ---- MFM 3/2 ----------------------------------------------------------------------------

// select.h's rank3 / pick3 as selects of the values (the same selections): the pair (0, 1)
// gives its winner `hi` and loser `lo` (the first on ties); the maximum is `hi` unless the last
// third beats it, and the median is then `hi`, else the higher-ranked of `lo` and the last third
// (the later of the two, so it wins only when it beats `lo`). On integer keys (IntRank, also for
// float / double), so GCC if-converts the chained selections and the loop vectorises: with
// float comparisons and index selects it stayed scalar (1.5 GB/s against 25-50 for MFM 2/1).
template <typename scalar_t, bool kMask, typename T = typename IntRank<scalar_t>::T>
LIGHTFACE_SIMD_CLONES void mfm3_run(const T* __restrict a, const T* __restrict b, const T* __restrict c,
                                    T* __restrict ymax, T* __restrict ymed, uint8_t* __restrict m, int64_t n) {
  using R = IntRank<scalar_t>;
  for (int64_t k = 0; k < n; ++k) {
    const T v0 = a[k], v1 = b[k], v2 = c[k];
    const auto k0 = R::key(v0), k1 = R::key(v1), k2 = R::key(v2);
    const bool one_over_zero = beats(k0, k1);
    const T hi = one_over_zero ? v1 : v0, lo = one_over_zero ? v0 : v1;
    const auto khi = one_over_zero ? k1 : k0, klo = one_over_zero ? k0 : k1;
    const bool two_is_max = beats(khi, k2), two_over_lo = beats(klo, k2);
    ymax[k] = two_is_max ? v2 : hi;
    ymed[k] = two_is_max ? hi : (two_over_lo ? v2 : lo);
    if constexpr (kMask) {
      const int first = static_cast<int>(one_over_zero);  // index of hi; lo is 1 - first
      const int imax = two_is_max ? 2 : first;
      const int imed = two_is_max ? first : (two_over_lo ? 2 : 1 - first);
      m[k] = pack_rank3(imax, imed);
    }
  }
}

// On the bit patterns (IntRank's unsigned T): third j gets gmax where it was the maximum, gmed
// where it was the median, else +0 (all bits 0), as AND / OR with all-ones masks (imax != imed).
// The selects on the values vectorised only with AVX-512 in 16 bits and not at all at the
// baseline ISA.
template <typename T>
LIGHTFACE_SIMD_CLONES void mfm3_backward_run(const T* __restrict gmax, const T* __restrict gmed,
                                             const uint8_t* __restrict m, T* __restrict g0, T* __restrict g1,
                                             T* __restrict g2, int64_t n) {
  static_assert(std::is_unsigned_v<T>, "mfm3_backward_run selects bit patterns");
  for (int64_t k = 0; k < n; ++k) {
    const T imax = static_cast<T>(mask_max(m[k])), imed = static_cast<T>(mask_median(m[k]));
    const T vmax = gmax[k], vmed = gmed[k];
    g0[k] = (vmax & -T(imax == 0)) | (vmed & -T(imed == 0));
    g1[k] = (vmax & -T(imax == 1)) | (vmed & -T(imed == 1));
    g2[k] = (vmax & -T(imax == 2)) | (vmed & -T(imed == 2));
  }
}

template <bool kMask>
std::tuple<at::Tensor, at::Tensor> mfm3_impl(const at::Tensor& input, int64_t dim) {
  const MfmForward operands = mfm_forward_operands(input, dim, 3, kMask, "mfm_3_2");
  const at::Tensor &x = operands.x, &out = operands.out, &mask = operands.mask;
  const SplitGeometry g = operands.g;
  if (out.numel() == 0) return {out, mask};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lightface_mfm_3_2_cpu", [&] {
    const auto* px = loop_data<scalar_t, IntRank>(x);
    auto* py = loop_data_mut<scalar_t, IntRank>(out);
    uint8_t* pm = kMask ? mask.mutable_data_ptr<uint8_t>() : nullptr;
    const int64_t len = g.len;
    at::parallel_for(0, g.outer * len, kGrain, [&](int64_t begin, int64_t end) {
      for_each_run(begin, end, len, [&](int64_t o, int64_t j, int64_t i, int64_t count) {
        const auto* a = px + o * 3 * len + j;
        auto* y = py + o * 2 * len + j;
        mfm3_run<scalar_t, kMask>(a, a + len, a + 2 * len, y, y + len, kMask ? pm + i : nullptr, count);
      });
    });
  });
  return {out, mask};
}

at::Tensor mfm_3_2_cpu(const at::Tensor& x, int64_t dim) {
  return std::get<0>(mfm3_impl<false>(x, dim));
}

std::tuple<at::Tensor, at::Tensor> mfm_3_2_forward_cpu(const at::Tensor& x, int64_t dim) {
  return mfm3_impl<true>(x, dim);
}

at::Tensor mfm_3_2_backward_cpu(const at::Tensor& grad_in, const at::Tensor& mask_in, int64_t dim) {
  const MfmBackward operands = mfm_backward_operands(grad_in, mask_in, dim, 3, "mfm_3_2_backward");
  const at::Tensor &grad = operands.grad, &mask = operands.mask, &out = operands.out;
  const SplitGeometry g = operands.g;
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "lightface_mfm_3_2_backward_cpu",
                                  [&] {
    const auto* pg = loop_data<scalar_t, IntRank>(grad);
    const uint8_t* pm = mask.const_data_ptr<uint8_t>();
    auto* po = loop_data_mut<scalar_t, IntRank>(out);
    const int64_t len = g.len;
    at::parallel_for(0, g.outer * len, kGrain, [&](int64_t begin, int64_t end) {
      for_each_run(begin, end, len, [&](int64_t o, int64_t j, int64_t i, int64_t count) {
        const auto* gy = pg + o * 2 * len + j;
        auto* gx = po + o * 3 * len + j;
        mfm3_backward_run(gy, gy + len, pm + i, gx, gx + len, gx + 2 * len, count);
      });
    });
  });
  return out;
}

}  // namespace
}  // namespace lightface

TORCH_LIBRARY_IMPL(lightface, CPU, m) {
  m.impl("mfm", &lightface::mfm_cpu);
  m.impl("_mfm_forward", &lightface::mfm_forward_cpu);
  m.impl("_mfm_backward", &lightface::mfm_backward_cpu);
  m.impl("mfm_3_2", &lightface::mfm_3_2_cpu);
  m.impl("_mfm_3_2_forward", &lightface::mfm_3_2_forward_cpu);
  m.impl("_mfm_3_2_backward", &lightface::mfm_3_2_backward_cpu);
}
