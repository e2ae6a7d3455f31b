// CUDA kernels of the anisotropic L1 total variation and its backward (see cuda/utils.cuh
// for the block-partial-sum and element-wise-backward kernels they instantiate).
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common.h"
#include "cuda/utils.cuh"
#include "select.h"

namespace lightface {
namespace cuda {
namespace {

// Terms owned by pixel (row, x) of an image of C*H rows: |I[x+1] - I[x]| when x < W-1 and
// |I[next row, x] - I[x]| when the row is not the last of its channel.
struct TVTerm {
  C10_HOST_DEVICE static int64_t columns(int64_t w) { return w; }

  template <typename scalar_t>
  __device__ at::opmath_type<scalar_t> value(const scalar_t* image, int64_t row, int64_t x, const RowBlocks& g) const {
    using op_t = at::opmath_type<scalar_t>;
    const scalar_t* r = image + row * g.w;
    const op_t c = static_cast<op_t>(r[x]);
    op_t s = 0;
    if (x < g.w - 1) {
      const op_t d = static_cast<op_t>(r[x + 1]) - c;
      s += d < op_t(0) ? -d : d;
    }
    if (row % g.h != g.h - 1) {
      const op_t d = static_cast<op_t>(r[x + g.w]) - c;
      s += d < op_t(0) ? -d : d;
    }
    return s;
  }

  // weight * d T / d I[row, x] (the sum of four signs times weight, as the CPU kernel).
  template <typename scalar_t>
  __device__ at::opmath_type<scalar_t> grad(const scalar_t* image, int64_t row, int64_t x, const RowBlocks& g,
                                            at::opmath_type<scalar_t> weight) const {
    using op_t = at::opmath_type<scalar_t>;
    const scalar_t* r = image + row * g.w;
    const op_t c = static_cast<op_t>(r[x]);
    const int64_t y = row % g.h;
    op_t s = 0;
    if (x > 0) s += sign_of(c - static_cast<op_t>(r[x - 1]));
    if (x < g.w - 1) s -= sign_of(static_cast<op_t>(r[x + 1]) - c);
    if (y > 0) s += sign_of(c - static_cast<op_t>(r[x - g.w]));
    if (y < g.h - 1) s -= sign_of(static_cast<op_t>(r[x + g.w]) - c);
    return s * weight;
  }
};

at::Tensor total_variation_cuda(const at::Tensor& img, c10::string_view reduction) {
  return loss_forward_cuda<TVTerm>(img, reduction, "total_variation");
}

at::Tensor total_variation_backward_cuda(const at::Tensor& grad, const at::Tensor& img, c10::string_view reduction) {
  return loss_backward_cuda<TVTerm>(grad, img, reduction, "total_variation_backward");
}

}  // namespace
}  // namespace cuda
}  // namespace lightface

TORCH_LIBRARY_IMPL(lightface, CUDA, m) {
  m.impl("total_variation", &lightface::cuda::total_variation_cuda);
  m.impl("_total_variation_backward", &lightface::cuda::total_variation_backward_cuda);
}
