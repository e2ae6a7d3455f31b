// Helpers shared by the CUDA kernels: vector packs, launch sizes, block reductions, and
// the two loss kernels (per-block partial sums, element-wise backward) parameterised by
// the per-pixel term of each loss.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

#include "common.h"

namespace lightface {
namespace cuda {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535LL * 16;

// N consecutive elements moved as one (16-byte when N * sizeof(T) == 16) load/store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

inline int64_t blocks_for(int64_t work_items) {
  return std::max<int64_t>(1, std::min<int64_t>((work_items + kThreads - 1) / kThreads, kMaxBlocks));
}

// Elements per 16-byte pack when `len` and every pointer allow it, else 1.
template <typename scalar_t>
inline int pack_width(int64_t len, std::initializer_list<const void*> ptrs) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (len % kVec != 0) return 1;
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 1;
  }
  return kVec;
}

template <typename T>
__device__ inline T warp_reduce_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); the result is valid in thread 0.
template <typename T>
__device__ inline T block_reduce_sum(T v) {
  __shared__ T warp_sums[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_reduce_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? warp_sums[lane] : T(0);
  if (warp == 0) v = warp_reduce_sum(v);
  return v;
}

// One CUDA block per (image, row block): partials[t] = sum of term(image, row, x) over the
// block's rows and x in [0, term.columns(w)). Deterministic (no atomics).
template <typename scalar_t, typename Term>
__global__ void loss_partials_kernel(const scalar_t* __restrict__ img, at::opmath_type<scalar_t>* __restrict__ partials,
                                     RowBlocks g, Term term) {
  using op_t = at::opmath_type<scalar_t>;
  const int64_t t = blockIdx.x;
  const int64_t n = t / g.blocks, b = t % g.blocks;
  const int64_t r0 = b * g.rows_per_block, r1 = std::min(g.rows, r0 + g.rows_per_block);
  const int64_t cols = term.columns(g.w);
  const int64_t count = (r1 - r0) * cols;
  const scalar_t* image = img + n * g.rows * g.w;
  op_t acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    acc += term.value(image, r0 + i / cols, i % cols, g);
  }
  acc = block_reduce_sum(acc);
  if (threadIdx.x == 0) partials[t] = acc;
}

// grad[i] = term.grad(image, row, x, weights[n * stride]) for every pixel (weights: common.h's
// loss_weights, so that the values are the CPU kernels' bit for bit).
template <typename scalar_t, typename Term>
__global__ void loss_backward_kernel(const scalar_t* __restrict__ img,
                                     const at::opmath_type<scalar_t>* __restrict__ weights, int64_t stride,
                                     scalar_t* __restrict__ out, RowBlocks g, Term term) {
  const int64_t per_image = g.rows * g.w;
  const int64_t total = g.n * per_image;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / per_image, k = i % per_image;
    const scalar_t* image = img + n * per_image;
    out[i] = static_cast<scalar_t>(term.grad(image, k / g.w, k % g.w, g, weights[n * stride]));
  }
}

// Forward of a loss: partial sums on the device, then finalize_loss (common.h).
template <typename Term>
at::Tensor loss_forward_cuda(const at::Tensor& input, std::string_view reduction_name, const char* op) {
  check_image(input, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor img = input.contiguous();
  const RowBlocks g = row_blocks(img, 8192);
  const auto acc_dtype = img.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor partials = at::zeros({g.n, std::max<int64_t>(g.blocks, 1)}, img.options().dtype(acc_dtype));
  // "mean" divides by N * C * H * columns(W): floor(W/2) pairs per row for the symmetry loss,
  // W pixels per row for total variation (the pixel count, not the number of differences).
  const int64_t denominator = g.n * g.rows * Term::columns(g.w);
  if (g.n * g.blocks > 0 && Term::columns(g.w) > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "lightface_loss_cuda", [&] {
      loss_partials_kernel<scalar_t, Term>
          <<<g.n * g.blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
              img.const_data_ptr<scalar_t>(), partials.mutable_data_ptr<at::opmath_type<scalar_t>>(), g, Term{});
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return finalize_loss(partials, reduction, denominator, img.scalar_type());
}

template <typename Term>
at::Tensor loss_backward_cuda(const at::Tensor& grad_in, const at::Tensor& input, std::string_view reduction_name,
                              const char* op) {
  check_image(input, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  check_loss_grad(grad_in, input, reduction, op);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor img = input.contiguous();
  at::Tensor out = at::empty(img.sizes(), img.options());
  if (out.numel() == 0) return out;
  const RowBlocks g = row_blocks(img, 8192);
  const int64_t stride = loss_weight_stride(reduction);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, img.scalar_type(), "lightface_loss_backward_cuda", [&] {
    using op_t = at::opmath_type<scalar_t>;
    const at::Tensor weights = loss_weights(grad_in, reduction, g.n * g.rows * Term::columns(g.w),
                                            c10::CppTypeToScalarType<op_t>::value);
    loss_backward_kernel<scalar_t, Term><<<blocks_for(out.numel()), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        img.const_data_ptr<scalar_t>(), weights.const_data_ptr<op_t>(), stride, out.mutable_data_ptr<scalar_t>(), g,
        Term{});
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cuda
}  // namespace lightface
