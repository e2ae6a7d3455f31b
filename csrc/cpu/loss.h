// Driver shared by the CPU loss kernels (symmetry_loss.cpp, total_variation.cpp).
//
// The C*H rows of each image are grouped into fixed blocks (common.h: row_blocks);
// at::parallel_for runs over (image, block) pairs; each block's sum is written to its own
// slot and finalize_loss adds them in a fixed order, so results do not depend on the
// thread count. A `Term` provides:
//   static int64_t columns(int64_t w)                       terms per row ("mean" divisor)
//   template <class T> static double rows(image, r0, r1, g)  sum of rows [r0, r1) of one image
//   template <class T> static void backward_rows(image, grad, r0, r1, g, weight)
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <string_view>

#include "common.h"

namespace lightface {
namespace cpu {

constexpr int64_t kLossBlockElements = 16384;

// Calls fn(n, r0, r1) for the (image, row block) pairs [begin, end).
template <typename F>
inline void for_each_row_block(const RowBlocks& g, int64_t begin, int64_t end, const F& fn) {
  for (int64_t t = begin; t < end; ++t) {
    const int64_t n = t / g.blocks, b = t % g.blocks;
    const int64_t r0 = b * g.rows_per_block;
    fn(t, n, r0, std::min(g.rows, r0 + g.rows_per_block));
  }
}

template <typename Term>
at::Tensor loss_forward(const at::Tensor& input, std::string_view reduction_name, const char* op) {
  check_image(input, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  const at::Tensor img = input.contiguous();
  const RowBlocks g = row_blocks(img, kLossBlockElements);
  at::Tensor partials = at::zeros({g.n, std::max<int64_t>(g.blocks, 1)}, img.options().dtype(at::kDouble));
  if (g.n * g.blocks > 0 && Term::columns(g.w) > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "lightface_loss_cpu", [&] {
      const scalar_t* p = img.const_data_ptr<scalar_t>();
      double* out = partials.mutable_data_ptr<double>();
      at::parallel_for(0, g.n * g.blocks, 1, [&](int64_t begin, int64_t end) {
        for_each_row_block(g, begin, end, [&](int64_t t, int64_t n, int64_t r0, int64_t r1) {
          out[t] = Term::template rows<scalar_t>(p + n * g.rows * g.w, r0, r1, g);
        });
      });
    });
  }
  return finalize_loss(partials, reduction, g.n * g.rows * Term::columns(g.w), img.scalar_type());
}

template <typename Term>
at::Tensor loss_backward(const at::Tensor& grad_in, const at::Tensor& input, std::string_view reduction_name,
                         const char* op) {
  check_image(input, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  check_loss_grad(grad_in, input, reduction, op);
  const at::Tensor img = input.contiguous();
  at::Tensor out = at::empty(img.sizes(), img.options());
  if (out.numel() == 0) return out;
  const RowBlocks g = row_blocks(img, kLossBlockElements);
  const int64_t stride = loss_weight_stride(reduction);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "lightface_loss_backward_cpu", [&] {
    using op_t = at::opmath_type<scalar_t>;
    const at::Tensor weights = loss_weights(grad_in, reduction, g.n * g.rows * Term::columns(g.w),
                                            c10::CppTypeToScalarType<op_t>::value);
    const scalar_t* p = img.const_data_ptr<scalar_t>();
    const op_t* pw = weights.const_data_ptr<op_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.n * g.blocks, 1, [&](int64_t begin, int64_t end) {
      for_each_row_block(g, begin, end, [&](int64_t, int64_t n, int64_t r0, int64_t r1) {
        const int64_t offset = n * g.rows * g.w;
        Term::template backward_rows<scalar_t>(p + offset, po + offset, r0, r1, g, pw[n * stride]);
      });
    });
  });
  return out;
}

}  // namespace cpu
}  // namespace lightface
