// CUDA kernels of the left-right symmetry loss and its backward (see cuda/utils.cuh for
// the block-partial-sum and element-wise-backward kernels they instantiate).
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common.h"
#include "cuda/utils.cuh"
#include "select.h"

namespace lightface {
namespace cuda {
namespace {

// Term (row, x) for x < W/2: |I[row, x] - I[row, W-1-x]|.
struct SymmetryTerm {
  C10_HOST_DEVICE static int64_t columns(int64_t w) { return w / 2; }

  template <typename scalar_t>
  __device__ at::opmath_type<scalar_t> value(const scalar_t* image, int64_t row, int64_t x, const RowBlocks& g) const {
    using op_t = at::opmath_type<scalar_t>;
    const scalar_t* r = image + row * g.w;
    const op_t d = static_cast<op_t>(r[x]) - static_cast<op_t>(r[g.w - 1 - x]);
    return d < op_t(0) ? -d : d;
  }

  // weight * d S / d I[row, x], rounded as the CPU kernel: s = sign of the pair's difference
  // times weight on the left half, -s on the right half, +0 for the middle column of an odd width.
  template <typename scalar_t>
  __device__ at::opmath_type<scalar_t> grad(const scalar_t* image, int64_t row, int64_t x, const RowBlocks& g,
                                            at::opmath_type<scalar_t> weight) const {
    using op_t = at::opmath_type<scalar_t>;
    const scalar_t* r = image + row * g.w;
    const int64_t half = g.w / 2;
    if (x < half) return sign_of(static_cast<op_t>(r[x]) - static_cast<op_t>(r[g.w - 1 - x])) * weight;
    if (x >= g.w - half) return -(sign_of(static_cast<op_t>(r[g.w - 1 - x]) - static_cast<op_t>(r[x])) * weight);
    return op_t(0);
  }
};

at::Tensor symmetry_loss_cuda(const at::Tensor& img, c10::string_view reduction) {
  return loss_forward_cuda<SymmetryTerm>(img, reduction, "symmetry_loss");
}

at::Tensor symmetry_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& img, c10::string_view reduction) {
  return loss_backward_cuda<SymmetryTerm>(grad, img, reduction, "symmetry_loss_backward");
}

}  // namespace
}  // namespace cuda
}  // namespace lightface

TORCH_LIBRARY_IMPL(lightface, CUDA, m) {
  m.impl("symmetry_loss", &lightface::cuda::symmetry_loss_cuda);
  m.impl("_symmetry_loss_backward", &lightface::cuda::symmetry_loss_backward_cuda);
}
