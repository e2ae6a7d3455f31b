// CPU kernels of the left-right symmetry loss and its backward.
//
// Per image S_n = sum_{c,y} sum_{x < W/2} |I[c,y,x] - I[c,y,W-1-x]|. The C*H rows of each
// image are grouped into fixed blocks (common.h: row_blocks); each block's sum is
// accumulated in at::vec lanes of the accumulation type, per row in float64, and the
// blocks are added in a fixed order, so the result does not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "common.h"
#include "cpu/simd.h"
#include "select.h"

namespace lightface {
namespace {

constexpr int64_t kBlockElements = 16384;

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
    for (int64_t x = 0; x < half; ++x) {
      const op_t s = sign_of(static_cast<op_t>(row[x]) - static_cast<op_t>(mirror[-x])) * weight;
      g[x] = static_cast<scalar_t>(s);
      g_mirror[-x] = static_cast<scalar_t>(-s);
    }
    if (w % 2) g[half] = scalar_t(0);
  }
}

at::Tensor symmetry_loss_cpu(const at::Tensor& input, c10::string_view reduction_name) {
  const char* op = "symmetry_loss";
  check_image(input, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  const at::Tensor img = input.contiguous();
  const RowBlocks g = row_blocks(img, kBlockElements);
  at::Tensor partials = at::zeros({g.n, std::max<int64_t>(g.blocks, 1)}, img.options().dtype(at::kDouble));
  if (g.n * g.blocks > 0 && g.w >= 2) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "lightface_symmetry_loss_cpu", [&] {
      const scalar_t* p = img.const_data_ptr<scalar_t>();
      double* out = partials.mutable_data_ptr<double>();
      at::parallel_for(0, g.n * g.blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t n = t / g.blocks, b = t % g.blocks;
          const int64_t r0 = b * g.rows_per_block, r1 = std::min(g.rows, r0 + g.rows_per_block);
          out[t] = symmetry_rows<scalar_t>(p + (n * g.rows + r0) * g.w, r1 - r0, g.w);
        }
      });
    });
  }
  return finalize_loss(partials, reduction, symmetry_denominator(img), img.scalar_type());
}

at::Tensor symmetry_loss_backward_cpu(const at::Tensor& grad_in, const at::Tensor& input,
                                      c10::string_view reduction_name) {
  const char* op = "symmetry_loss_backward";
  check_image(input, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  check_loss_grad(grad_in, input, reduction, op);
  const at::Tensor img = input.contiguous();
  const at::Tensor grad = grad_in.reshape({-1}).to(at::kDouble).contiguous();
  const double scale = loss_grad_scale(reduction, symmetry_denominator(img));
  at::Tensor out = at::empty(img.sizes(), img.options());
  if (out.numel() == 0) return out;
  const RowBlocks g = row_blocks(img, kBlockElements);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "lightface_symmetry_loss_backward_cpu",
                                  [&] {
    using op_t = at::opmath_type<scalar_t>;
    const scalar_t* p = img.const_data_ptr<scalar_t>();
    const double* pg = grad.const_data_ptr<double>();
    const int64_t gstride = reduction == Reduction::None ? 1 : 0;
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.n * g.blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / g.blocks, b = t % g.blocks;
        const int64_t r0 = b * g.rows_per_block, r1 = std::min(g.rows, r0 + g.rows_per_block);
        const int64_t offset = (n * g.rows + r0) * g.w;
        const auto weight = static_cast<op_t>(pg[n * gstride] * scale);
        symmetry_backward_rows<scalar_t>(p + offset, po + offset, r1 - r0, g.w, weight);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace lightface

TORCH_LIBRARY_IMPL(lightface, CPU, m) {
  m.impl("symmetry_loss", &lightface::symmetry_loss_cpu);
  m.impl("_symmetry_loss_backward", &lightface::symmetry_loss_backward_cpu);
}
