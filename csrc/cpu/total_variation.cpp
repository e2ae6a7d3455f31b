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

#include "common.h"
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

struct TVTerm {
  static int64_t columns(int64_t w) { return w; }

  template <typename scalar_t>
  static double rows(const scalar_t* image, int64_t r0, int64_t r1, const RowBlocks& g) {
    return tv_rows<scalar_t>(image, r0, r1, g.h, g.w);
  }

  template <typename scalar_t>
  static void backward_rows(const scalar_t* image, scalar_t* grad, int64_t r0, int64_t r1, const RowBlocks& g,
                            at::opmath_type<scalar_t> weight) {
    tv_backward_rows<scalar_t>(image, grad, r0, r1, g.h, g.w, weight);
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
