// Shared argument checks and geometry helpers for the CPU and CUDA kernels.
//
// Every kernel reduces its input to one of two layouts, computed here once:
//   * split ops (mfm, mfm_3_2): a contiguous tensor viewed as (outer, parts, len) where
//     `parts` is 2 or 3 and `len = size(dim) / parts * prod(sizes after dim)`;
//   * image losses: a contiguous (N, C, H, W) tensor whose C*H rows of W pixels are
//     grouped into fixed blocks per image, so partial sums are deterministic.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

namespace lightface {

// Reduction of the per-image losses; the integer values are part of no interface.
enum class Reduction : int { None = 0, Sum = 1, Mean = 2 };

inline Reduction parse_reduction(std::string_view reduction, const char* op) {
  if (reduction == "none") return Reduction::None;
  if (reduction == "sum") return Reduction::Sum;
  if (reduction == "mean") return Reduction::Mean;
  TORCH_CHECK_VALUE(false, op, ": unknown reduction '", std::string(reduction),
                    "'; expected 'none', 'sum' or 'mean'");
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
                   t.scalar_type());
}

// (outer, parts, len) view of `x` split into `parts` equal chunks along `dim`.
struct SplitGeometry {
  int64_t dim;    // normalised dimension
  int64_t outer;  // product of the sizes before dim
  int64_t len;    // (size(dim) / parts) * product of the sizes after dim
};

inline SplitGeometry split_geometry(const at::Tensor& x, int64_t dim, int64_t parts, const char* op,
                                    const char* name = "x") {
  TORCH_CHECK_VALUE(x.dim() > 0, op, ": ", name, " must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK_INDEX(-x.dim() <= dim && dim < x.dim(), op, ": dim ", dim, " is out of range for ", name,
                    " of shape ", x.sizes(), " (", x.dim(), "-D)");
  const int64_t d = dim < 0 ? dim + x.dim() : dim;
  const int64_t size = x.size(d);
  TORCH_CHECK_VALUE(size % parts == 0, op, ": ", name, ".size(", d, ") must be divisible by ", parts,
                    ", got ", name, " of shape ", x.sizes());
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= x.size(i);
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  return {d, outer, size / parts * inner};
}

// sizes of `x` with sizes[dim] replaced.
inline std::vector<int64_t> resized(at::IntArrayRef sizes, int64_t dim, int64_t new_size) {
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out[dim] = new_size;
  return out;
}

// Operands of an MFM forward (parts = 2 for MFM 2/1, 3 for MFM 3/2): contiguous x viewed
// as (outer, parts, len), the output with (parts - 1) pieces along dim, and (when asked)
// the uint8 selection mask with one piece along dim.
struct MfmForward {
  at::Tensor x, out, mask;
  SplitGeometry g;
};

inline MfmForward mfm_forward_operands(const at::Tensor& input, int64_t dim, int64_t parts, bool with_mask,
                                       const char* op) {
  check_floating(input, op, "x");
  const SplitGeometry g = split_geometry(input, dim, parts, op);
  at::Tensor x = input.contiguous();
  const int64_t piece = x.size(g.dim) / parts;
  at::Tensor out = at::empty(resized(x.sizes(), g.dim, (parts - 1) * piece), x.options());
  at::Tensor mask =
      with_mask ? at::empty(resized(x.sizes(), g.dim, piece), x.options().dtype(at::kByte)) : at::Tensor();
  return {x, out, mask, g};
}

// Operands of an MFM backward: contiguous grad ((parts - 1) pieces along dim, viewed as
// (outer, parts - 1, len)) and mask (one piece), and the input gradient (parts pieces).
struct MfmBackward {
  at::Tensor grad, mask, out;
  SplitGeometry g;
};

inline MfmBackward mfm_backward_operands(const at::Tensor& grad_in, const at::Tensor& mask_in, int64_t dim,
                                         int64_t parts, const char* op) {
  check_floating(grad_in, op, "grad");
  TORCH_CHECK_TYPE(mask_in.scalar_type() == at::kByte, op, ": mask must be uint8, got ", mask_in.scalar_type());
  TORCH_CHECK_VALUE(grad_in.device() == mask_in.device(), op, ": grad is on ", grad_in.device(),
                    " but mask is on ", mask_in.device());
  const SplitGeometry g = split_geometry(grad_in, dim, parts - 1, op, "grad");
  const int64_t piece = grad_in.size(g.dim) / (parts - 1);
  TORCH_CHECK_VALUE(mask_in.sizes() == at::IntArrayRef(resized(grad_in.sizes(), g.dim, piece)), op, ": mask ",
                    mask_in.sizes(), " does not match grad ", grad_in.sizes(), " (expected size ", piece,
                    " along dim ", g.dim, ")");
  at::Tensor grad = grad_in.contiguous();
  at::Tensor out = at::empty(resized(grad.sizes(), g.dim, parts * piece), grad.options());
  return {grad, mask_in.contiguous(), out, g};
}

inline void check_image(const at::Tensor& img, const char* op) {
  TORCH_CHECK_VALUE(img.dim() == 4, op, ": img must be a 4-D tensor (N, C, H, W), got shape ", img.sizes());
  check_floating(img, op, "img");
}

// Rows of an (N, C, H, W) image batch grouped into `blocks` blocks of `rows_per_block`
// rows per image (the last block of an image may be shorter).
struct RowBlocks {
  int64_t n, c, h, w;
  int64_t rows;            // C * H rows per image
  int64_t rows_per_block;  // >= 1
  int64_t blocks;          // blocks per image (0 when an image has no rows)
};

inline RowBlocks row_blocks(const at::Tensor& img, int64_t target_elements) {
  RowBlocks g{img.size(0), img.size(1), img.size(2), img.size(3), 0, 1, 0};
  g.rows = g.c * g.h;
  g.rows_per_block = std::max<int64_t>(1, target_elements / std::max<int64_t>(g.w, 1));
  g.blocks = (g.rows + g.rows_per_block - 1) / g.rows_per_block;
  return g;
}

// Result of a loss from its per-(image, block) partial sums `partials` (N, blocks), any
// floating dtype: "none" -> (N,), "sum" -> (), "mean" -> sum / denominator (NaN when the
// denominator is 0, like torch.mean of an empty tensor). Summed in float64, cast to `dtype`.
inline at::Tensor finalize_loss(const at::Tensor& partials, Reduction reduction, int64_t denominator,
                                at::ScalarType dtype) {
  const at::Tensor per_image = partials.to(at::kDouble).sum(1);
  switch (reduction) {
    case Reduction::None:
      return per_image.to(dtype);
    case Reduction::Sum:
      return per_image.sum().to(dtype);
    case Reduction::Mean:
    default:
      return per_image.sum().div(static_cast<double>(denominator)).to(dtype);
  }
}

// Backward of a loss: the incoming gradient is () for "sum"/"mean" and (N,) for "none".
inline void check_loss_grad(const at::Tensor& grad, const at::Tensor& img, Reduction reduction, const char* op) {
  check_floating(grad, op, "grad");
  if (reduction == Reduction::None) {
    TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == img.size(0), op,
                      ": with reduction='none' grad must have shape (N,) = (", img.size(0), ",), got ",
                      grad.sizes());
  } else {
    TORCH_CHECK_VALUE(grad.numel() == 1, op, ": grad must hold one element for reduction 'sum'/'mean', got shape ",
                      grad.sizes());
  }
  TORCH_CHECK_VALUE(grad.device() == img.device(), op, ": grad is on ", grad.device(), " but img is on ",
                    img.device());
}

// Scale applied to the incoming gradient: 1 / denominator for "mean", else 1.
inline double loss_grad_scale(Reduction reduction, int64_t denominator) {
  if (reduction != Reduction::Mean) return 1.0;
  return denominator > 0 ? 1.0 / static_cast<double>(denominator) : 0.0;
}

// What a loss backward multiplies each image's pattern of signs by: grad[n] * scale, computed in
// float64 and rounded once to `op_type` (the kernels' accumulation type: float32, float64 for
// float64 images), on grad's device. Contiguous, 1 element for "sum"/"mean" and N for "none";
// image n reads element n * loss_weight_stride(reduction). Shared by the CPU and CUDA kernels so
// that both round the weight alike (a float32 product of the rounded grad and the rounded scale
// differs from this in the last bit for about a third of the values).
inline at::Tensor loss_weights(const at::Tensor& grad, Reduction reduction, int64_t denominator,
                               at::ScalarType op_type) {
  const double scale = loss_grad_scale(reduction, denominator);
  const at::Tensor grad64 = grad.reshape({-1}).to(at::kDouble);
  return (scale == 1.0 ? grad64 : grad64.mul(scale)).to(op_type).contiguous();
}

inline int64_t loss_weight_stride(Reduction reduction) { return reduction == Reduction::None ? 1 : 0; }

}  // namespace lightface
