// CPU kernels of the left-right symmetry loss and its backward.
//
// Per image S_n = sum_{c,y} sum_{x < W/2} |I[c,y,x] - I[c,y,W-1-x]|: a row's terms are
// summed in the accumulation type (omp simd lanes), rows in float64; blocks of rows are
// driven by cpu/loss.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "common.h"
#include "cpu/keys.h"
#include "cpu/loss.h"
#include "cpu/simd.h"
#include "select.h"

namespace lightface {
namespace {

// Sum over `rows` rows of width w of sum_{x < w/2} |r[x] - r[w-1-x]|.
template <typename scalar_t>
LIGHTFACE_SIMD_CLONES double symmetry_rows(const scalar_t* __restrict img, int64_t rows, int64_t w) {
  using op_t = at::opmath_type<scalar_t>;
  const int64_t half = w / 2;
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* row = img + r * w;
    const scalar_t* mirror = row + w - 1;  // mirror[-x] = row[w-1-x]
    op_t acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t x = 0; x < half; ++x) {
      acc += abs_of(static_cast<op_t>(row[x]) - static_cast<op_t>(mirror[-x]));
    }
    total += acc;
  }
  return total;
}

// grad of `rows` rows: g[x] = weight * sign(r[x] - r[w-1-x]), g[w-1-x] = -g[x], middle 0.
template <typename scalar_t>
LIGHTFACE_SIMD_CLONES void symmetry_backward_rows(const scalar_t* __restrict img, scalar_t* __restrict grad,
                                                  int64_t rows, int64_t w, at::opmath_type<scalar_t> weight) {
  using op_t = at::opmath_type<scalar_t>;
  const int64_t half = w / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* row = img + r * w;
    const scalar_t* mirror = row + w - 1;
    scalar_t* g = grad + r * w;
    scalar_t* g_mirror = g + w - 1;
#pragma omp simd
    for (int64_t x = 0; x < half; ++x) {
      const op_t s = sign_of(static_cast<op_t>(row[x]) - static_cast<op_t>(mirror[-x])) * weight;
      g[x] = static_cast<scalar_t>(s);
      g_mirror[-x] = static_cast<scalar_t>(-s);
    }
    if (w % 2) g[half] = scalar_t(0);
  }
}

// The same for float16 / bfloat16 on the bits (cpu/keys.h): the sign from the integer keys,
// the output the 16-bit pattern of sign * weight chosen among the three possible ones
// (computed once, as the float loop above rounds them), so the loop vectorises; the scalar
// float -> half conversion per element made it 20-50x slower than float32.
template <typename scalar_t>
LIGHTFACE_SIMD_CLONES void symmetry_backward_rows16(const uint16_t* __restrict img, uint16_t* __restrict grad,
                                                    int64_t rows, int64_t w, float weight) {
  using R = Rank<scalar_t>;
  const uint16_t pos = bits16<scalar_t>(1.0f * weight), neg = bits16<scalar_t>(-(1.0f * weight));
  const uint16_t zero = bits16<scalar_t>(0.0f * weight), mirror_zero = bits16<scalar_t>(-(0.0f * weight));
  const int64_t half = w / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* row = img + r * w;
    const uint16_t* mirror = row + w - 1;
    uint16_t* g = grad + r * w;
    uint16_t* g_mirror = g + w - 1;
#pragma omp simd
    for (int64_t x = 0; x < half; ++x) {
      const int16_t s = R::sign(R::key(row[x]), R::key(mirror[-x]));
      g[x] = s > 0 ? pos : (s < 0 ? neg : zero);
      g_mirror[-x] = s > 0 ? neg : (s < 0 ? pos : mirror_zero);
    }
    if (w % 2) g[half] = 0;  // +0
  }
}

struct SymmetryTerm {
  static int64_t columns(int64_t w) { return w / 2; }

  template <typename scalar_t>
  static double rows(const scalar_t* image, int64_t r0, int64_t r1, const RowBlocks& g) {
    return symmetry_rows<scalar_t>(image + r0 * g.w, r1 - r0, g.w);
  }

  template <typename scalar_t>
  static void backward_rows(const scalar_t* image, scalar_t* grad, int64_t r0, int64_t r1, const RowBlocks& g,
                            at::opmath_type<scalar_t> weight) {
    if constexpr (kIs16Bit<scalar_t>) {
      symmetry_backward_rows16<scalar_t>(reinterpret_cast<const uint16_t*>(image) + r0 * g.w,
                                         reinterpret_cast<uint16_t*>(grad) + r0 * g.w, r1 - r0, g.w, weight);
    } else {
      symmetry_backward_rows<scalar_t>(image + r0 * g.w, grad + r0 * g.w, r1 - r0, g.w, weight);
    }
  }
};

at::Tensor symmetry_loss_cpu(const at::Tensor& img, c10::string_view reduction) {
  return cpu::loss_forward<SymmetryTerm>(img, reduction, "symmetry_loss");
}

at::Tensor symmetry_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& img, c10::string_view reduction) {
  return cpu::loss_backward<SymmetryTerm>(grad, img, reduction, "symmetry_loss_backward");
}

}  // namespace
}  // namespace lightface

TORCH_LIBRARY_IMPL(lightface, CPU, m) {
  m.impl("symmetry_loss", &lightface::symmetry_loss_cpu);
  m.impl("_symmetry_loss_backward", &lightface::symmetry_loss_backward_cpu);
}
