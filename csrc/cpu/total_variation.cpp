// CPU kernels of the anisotropic L1 total variation and its backward.
//
// Per image T_n = sum |I[..,y,x+1] - I[..,y,x]| + sum |I[..,y+1,x] - I[..,y,x]|. Row (c, y)
// contributes its horizontal differences and, when y < H-1, its vertical differences
// with row (c, y+1). Blocks of rows are driven by cpu/loss.h (deterministic block sums).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

#include "common.h"
#include "cpu/keys.h"
#include "cpu/loss.h"
#include "cpu/simd.h"
#include "select.h"

namespace lightface {
namespace {

// Sum of the TV terms owned by rows [r0, r1) of one image (rows = C*H rows of width w):
// each row's horizontal differences and, unless it is the last row of its channel, its
// vertical differences with the next row.
template <typename scalar_t>
LIGHTFACE_SIMD_CLONES double tv_rows(const scalar_t* __restrict image, int64_t r0, int64_t r1, int64_t h,
                                     int64_t w) {
  using op_t = at::opmath_type<scalar_t>;
  double total = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* row = image + r * w;
    op_t acc = 0;
    if (r % h != h - 1) {  // horizontal + vertical terms
      const scalar_t* next = row + w;
#pragma omp simd reduction(+ : acc)
      for (int64_t x = 0; x < w - 1; ++x) {
        const op_t c = static_cast<op_t>(row[x]);
        acc += abs_of(static_cast<op_t>(row[x + 1]) - c) + abs_of(static_cast<op_t>(next[x]) - c);
      }
      if (w > 0) acc += abs_of(static_cast<op_t>(next[w - 1]) - static_cast<op_t>(row[w - 1]));
    } else {  // the last row of a channel: horizontal terms only
#pragma omp simd reduction(+ : acc)
      for (int64_t x = 0; x < w - 1; ++x) acc += abs_of(static_cast<op_t>(row[x + 1]) - static_cast<op_t>(row[x]));
    }
    total += acc;
  }
  return total;
}

// d T / d I at pixel x of a row: sign terms of its left, right, upper and lower
// neighbours. A missing neighbour (image border) is the pixel itself, so its term is 0.
template <typename scalar_t>
inline at::opmath_type<scalar_t> tv_grad_at(const scalar_t* row, const scalar_t* prev, const scalar_t* next,
                                            int64_t x, int64_t left, int64_t right) {
  using op_t = at::opmath_type<scalar_t>;
  const op_t c = static_cast<op_t>(row[x]);
  return sign_of(c - static_cast<op_t>(row[left])) - sign_of(static_cast<op_t>(row[right]) - c) +
         sign_of(c - static_cast<op_t>(prev[x])) - sign_of(static_cast<op_t>(next[x]) - c);
}

template <typename scalar_t>
LIGHTFACE_SIMD_CLONES void tv_backward_rows(const scalar_t* __restrict image, scalar_t* __restrict grad, int64_t r0,
                                            int64_t r1, int64_t h, int64_t w, at::opmath_type<scalar_t> weight) {
  using op_t = at::opmath_type<scalar_t>;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* __restrict row = image + r * w;
    const scalar_t* __restrict prev = r % h != 0 ? row - w : row;
    const scalar_t* __restrict next = r % h != h - 1 ? row + w : row;
    scalar_t* __restrict g = grad + r * w;
    g[0] = static_cast<scalar_t>(tv_grad_at(row, prev, next, 0, 0, w > 1 ? 1 : 0) * weight);
    // Interior: written out (no helper call) so the loop vectorises inside the ISA clones.
    for (int64_t x = 1; x < w - 1; ++x) {
      const op_t c = static_cast<op_t>(row[x]);
      const op_t s = sign_of(c - static_cast<op_t>(row[x - 1])) - sign_of(static_cast<op_t>(row[x + 1]) - c) +
                     sign_of(c - static_cast<op_t>(prev[x])) - sign_of(static_cast<op_t>(next[x]) - c);
      g[x] = static_cast<scalar_t>(s * weight);
    }
    if (w > 1) g[w - 1] = static_cast<scalar_t>(tv_grad_at(row, prev, next, w - 1, w - 2, w - 1) * weight);
  }
}

// The same for float16 / bfloat16 on the bits (cpu/keys.h, as the symmetry loss): the four
// signs from the integer keys, and the output the 16-bit pattern of s * weight for the sum
// s in -4..4, chosen among the nine (computed once, as the float loop above rounds them) by
// selects, so the loop vectorises; the scalar float <-> half conversions per element made it
// 3-10x slower than float32 (and float16 no faster than the composite PyTorch formulation).
template <typename scalar_t>
struct TVBits {
  using R = Rank<scalar_t>;
  uint16_t out[9];  // out[s + 4]: the bits of s * weight

  explicit TVBits(float weight) {
    for (int s = -4; s <= 4; ++s) out[s + 4] = bits16<scalar_t>(static_cast<float>(s) * weight);
  }
  // The bits of sign(c - left) - sign(right - c) + sign(c - up) - sign(down - c), times weight.
  C10_ALWAYS_INLINE uint16_t at(uint16_t c, uint16_t left, uint16_t right, uint16_t up, uint16_t down) const {
    const int16_t kc = R::key(c);
    const int16_t s = R::sign_sum_term(kc, R::key(left)) - R::sign_sum_term(R::key(right), kc) +
                      R::sign_sum_term(kc, R::key(up)) - R::sign_sum_term(R::key(down), kc);
    uint16_t v = 0;  // OR of the masked patterns: exactly one i has s == i - 4
    for (int i = 0; i < 9; ++i) v |= out[i] & static_cast<uint16_t>(-static_cast<int16_t>(s == i - 4));
    return v;
  }
};

// Rows [r0, r1) of one image. The rows strictly inside a channel run as one flat loop over their
// pixels (neighbours at i -+ 1 and i -+ w), so the vector loop is long and its scalar tail paid
// once per run, not once per row (per row it cost more than the vector body at W = 128); the
// first and last column of those rows are then rewritten with their true neighbours. The first
// and last row of a channel run row by row, their missing neighbour row being the row itself.
template <typename scalar_t>
LIGHTFACE_SIMD_CLONES void tv_backward_rows16(const uint16_t* __restrict image, uint16_t* __restrict grad,
                                              int64_t r0, int64_t r1, int64_t h, int64_t w, float weight) {
  const TVBits<scalar_t> tv(weight);
  auto border = [&](const uint16_t* row, const uint16_t* prev, const uint16_t* next, uint16_t* g, int64_t x) {
    g[x] = tv.at(row[x], row[x > 0 ? x - 1 : x], row[x < w - 1 ? x + 1 : x], prev[x], next[x]);
  };
  for (int64_t r = r0; r < r1;) {
    const int64_t y = r % h;
    if (y == 0 || y == h - 1) {
      const uint16_t* __restrict row = image + r * w;
      const uint16_t* __restrict prev = y != 0 ? row - w : row;
      const uint16_t* __restrict next = y != h - 1 ? row + w : row;
      uint16_t* __restrict g = grad + r * w;
#pragma omp simd
      for (int64_t x = 1; x < w - 1; ++x) g[x] = tv.at(row[x], row[x - 1], row[x + 1], prev[x], next[x]);
      border(row, prev, next, g, 0);
      border(row, prev, next, g, w - 1);
      ++r;
      continue;
    }
    const int64_t end = std::min(r1, r - y + h - 1);  // rows [r, end) have rows above and below
#pragma omp simd
    for (int64_t i = r * w; i < end * w; ++i) {
      grad[i] = tv.at(image[i], image[i - 1], image[i + 1], image[i - w], image[i + w]);
    }
    for (; r < end; ++r) {
      const uint16_t* row = image + r * w;
      border(row, row - w, row + w, grad + r * w, 0);
      border(row, row - w, row + w, grad + r * w, w - 1);
    }
  }
}

struct TVTerm {
  static int64_t columns(int64_t w) { return w; }

  template <typename scalar_t>
  static double rows(const scalar_t* image, int64_t r0, int64_t r1, const RowBlocks& g) {
    return tv_rows<scalar_t>(image, r0, r1, g.h, g.w);
  }

  template <typename scalar_t>
  static void backward_rows(const scalar_t* image, scalar_t* grad, int64_t r0, int64_t r1, const RowBlocks& g,
                            at::opmath_type<scalar_t> weight) {
    if constexpr (kIs16Bit<scalar_t>) {
      tv_backward_rows16<scalar_t>(reinterpret_cast<const uint16_t*>(image), reinterpret_cast<uint16_t*>(grad), r0,
                                   r1, g.h, g.w, weight);
    } else {
      tv_backward_rows<scalar_t>(image, grad, r0, r1, g.h, g.w, weight);
    }
  }
};

at::Tensor total_variation_cpu(const at::Tensor& img, c10::string_view reduction) {
  return cpu::loss_forward<TVTerm>(img, reduction, "total_variation");
}

at::Tensor total_variation_backward_cpu(const at::Tensor& grad, const at::Tensor& img, c10::string_view reduction) {
  return cpu::loss_backward<TVTerm>(grad, img, reduction, "total_variation_backward");
}

}  // namespace
}  // namespace lightface

TORCH_LIBRARY_IMPL(lightface, CPU, m) {
  m.impl("total_variation", &lightface::total_variation_cpu);
  m.impl("_total_variation_backward", &lightface::total_variation_backward_cpu);
}
