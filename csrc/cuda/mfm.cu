// CUDA kernels of MFM 2/1 and MFM 3/2 (forward, forward with selection mask, backward).
//
// Same (outer, parts, len) layout as the CPU kernels (common.h). Each thread handles a
// pack of consecutive elements of one row, moved with 16-byte loads/stores when `len`
// and the pointers allow it (pack_width), else one element.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common.h"
#include "cuda/utils.cuh"
#include "select.h"

namespace lightface {
namespace cuda {
namespace {

template <int V, typename F>
__device__ inline void for_each_pack(int64_t outer, int64_t len, const F& fn) {
  const int64_t packs_per_row = len / V;
  const int64_t total = outer * packs_per_row;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    fn(p / packs_per_row, (p % packs_per_row) * V);
  }
}

template <typename T, int V>
__device__ inline Pack<T, V> load(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V>
__device__ inline void store(T* p, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p) = v;
}

// ---- MFM 2/1 ----------------------------------------------------------------------------

template <typename scalar_t, int V, bool kMask>
__global__ void mfm2_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, uint8_t* __restrict__ mask,
                            int64_t outer, int64_t len) {
  using op_t = at::opmath_type<scalar_t>;
  for_each_pack<V>(outer, len, [&](int64_t o, int64_t j) {
    const auto a = load<scalar_t, V>(x + o * 2 * len + j);
    const auto b = load<scalar_t, V>(x + o * 2 * len + len + j);
    Pack<scalar_t, V> out;
    Pack<uint8_t, V> m;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const bool second = beats(static_cast<op_t>(a.v[k]), static_cast<op_t>(b.v[k]));
      out.v[k] = second ? b.v[k] : a.v[k];
      m.v[k] = second;
    }
    store(y + o * len + j, out);
    if constexpr (kMask) store(mask + o * len + j, m);
  });
}

template <typename scalar_t, int V>
__global__ void mfm2_backward_kernel(const scalar_t* __restrict__ grad, const uint8_t* __restrict__ mask,
                                     scalar_t* __restrict__ out, int64_t outer, int64_t len) {
  for_each_pack<V>(outer, len, [&](int64_t o, int64_t j) {
    const auto g = load<scalar_t, V>(grad + o * len + j);
    const auto m = load<uint8_t, V>(mask + o * len + j);
    Pack<scalar_t, V> ga, gb;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      ga.v[k] = m.v[k] ? scalar_t(0) : g.v[k];
      gb.v[k] = m.v[k] ? g.v[k] : scalar_t(0);
    }
    store(out + o * 2 * len + j, ga);
    store(out + o * 2 * len + len + j, gb);
  });
}

// ---- MFM 3/2 ----------------------------------------------------------------------------

template <typename scalar_t, int V, bool kMask>
__global__ void mfm3_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, uint8_t* __restrict__ mask,
                            int64_t outer, int64_t len) {
  using op_t = at::opmath_type<scalar_t>;
  for_each_pack<V>(outer, len, [&](int64_t o, int64_t j) {
    const scalar_t* base = x + o * 3 * len + j;
    const auto a = load<scalar_t, V>(base);
    const auto b = load<scalar_t, V>(base + len);
    const auto c = load<scalar_t, V>(base + 2 * len);
    Pack<scalar_t, V> ymax, ymed;
    Pack<uint8_t, V> m;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      int imax, imed;
      rank3(static_cast<op_t>(a.v[k]), static_cast<op_t>(b.v[k]), static_cast<op_t>(c.v[k]), imax, imed);
      ymax.v[k] = pick3(imax, a.v[k], b.v[k], c.v[k]);
      ymed.v[k] = pick3(imed, a.v[k], b.v[k], c.v[k]);
      m.v[k] = pack_rank3(imax, imed);
    }
    store(y + o * 2 * len + j, ymax);
    store(y + o * 2 * len + len + j, ymed);
    if constexpr (kMask) store(mask + o * len + j, m);
  });
}

template <typename scalar_t, int V>
__global__ void mfm3_backward_kernel(const scalar_t* __restrict__ grad, const uint8_t* __restrict__ mask,
                                     scalar_t* __restrict__ out, int64_t outer, int64_t len) {
  for_each_pack<V>(outer, len, [&](int64_t o, int64_t j) {
    const auto gmax = load<scalar_t, V>(grad + o * 2 * len + j);
    const auto gmed = load<scalar_t, V>(grad + o * 2 * len + len + j);
    const auto m = load<uint8_t, V>(mask + o * len + j);
    Pack<scalar_t, V> g[3];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int imax = mask_max(m.v[k]), imed = mask_median(m.v[k]);
#pragma unroll
      for (int t = 0; t < 3; ++t) g[t].v[k] = imax == t ? gmax.v[k] : (imed == t ? gmed.v[k] : scalar_t(0));
    }
#pragma unroll
    for (int t = 0; t < 3; ++t) store(out + o * 3 * len + t * len + j, g[t]);
  });
}

// Calls launch(std::integral_constant<int, V>, blocks) with the widest pack `width` allows.
template <typename scalar_t, typename Launch>
void launch_packed(int width, int64_t elements, const Launch& launch) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (width == kVec) {
    launch(std::integral_constant<int, kVec>{}, blocks_for(elements / kVec));
  } else {
    launch(std::integral_constant<int, 1>{}, blocks_for(elements));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <bool kMask>
std::tuple<at::Tensor, at::Tensor> mfm2_impl(const at::Tensor& input, int64_t dim) {
  const c10::cuda::CUDAGuard guard(input.device());
  const MfmForward operands = mfm_forward_operands(input, dim, 2, kMask, "mfm");
  const at::Tensor &x = operands.x, &out = operands.out, &mask = operands.mask;
  const SplitGeometry g = operands.g;
  if (out.numel() == 0) return {out, mask};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lightface_mfm_cuda", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* py = out.mutable_data_ptr<scalar_t>();
    uint8_t* pm = kMask ? mask.mutable_data_ptr<uint8_t>() : nullptr;
    const int width = pack_width<scalar_t>(g.len, {px, py, pm});
    const auto stream = c10::cuda::getCurrentCUDAStream();
    launch_packed<scalar_t>(width, g.outer * g.len, [&](auto vec, int64_t blocks) {
      mfm2_kernel<scalar_t, decltype(vec)::value, kMask><<<blocks, kThreads, 0, stream>>>(px, py, pm, g.outer, g.len);
    });
  });
  return {out, mask};
}

at::Tensor mfm_cuda(const at::Tensor& x, int64_t dim) { return std::get<0>(mfm2_impl<false>(x, dim)); }

std::tuple<at::Tensor, at::Tensor> mfm_forward_cuda(const at::Tensor& x, int64_t dim) {
  return mfm2_impl<true>(x, dim);
}

at::Tensor mfm_backward_cuda(const at::Tensor& grad_in, const at::Tensor& mask_in, int64_t dim) {
  // The checks first: the dispatcher picks this kernel when either tensor is on a GPU, and the
  // guard needs a CUDA device (a CPU grad with a CUDA mask is refused by the check, naming both).
  const MfmBackward operands = mfm_backward_operands(grad_in, mask_in, dim, 2, "mfm_backward");
  const c10::cuda::CUDAGuard guard(operands.out.device());
  const at::Tensor &grad = operands.grad, &mask = operands.mask, &out = operands.out;
  const SplitGeometry g = operands.g;
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "lightface_mfm_backward_cuda", [&] {
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const uint8_t* pm = mask.const_data_ptr<uint8_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int width = pack_width<scalar_t>(g.len, {pg, pm, po});
    const auto stream = c10::cuda::getCurrentCUDAStream();
    launch_packed<scalar_t>(width, g.outer * g.len, [&](auto vec, int64_t blocks) {
      mfm2_backward_kernel<scalar_t, decltype(vec)::value><<<blocks, kThreads, 0, stream>>>(pg, pm, po, g.outer, g.len);
    });
  });
  return out;
}

template <bool kMask>
std::tuple<at::Tensor, at::Tensor> mfm3_impl(const at::Tensor& input, int64_t dim) {
  const c10::cuda::CUDAGuard guard(input.device());
  const MfmForward operands = mfm_forward_operands(input, dim, 3, kMask, "mfm_3_2");
  const at::Tensor &x = operands.x, &out = operands.out, &mask = operands.mask;
  const SplitGeometry g = operands.g;
  if (out.numel() == 0) return {out, mask};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lightface_mfm_3_2_cuda", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* py = out.mutable_data_ptr<scalar_t>();
    uint8_t* pm = kMask ? mask.mutable_data_ptr<uint8_t>() : nullptr;
    const int width = pack_width<scalar_t>(g.len, {px, py, pm});
    const auto stream = c10::cuda::getCurrentCUDAStream();
    launch_packed<scalar_t>(width, g.outer * g.len, [&](auto vec, int64_t blocks) {
      mfm3_kernel<scalar_t, decltype(vec)::value, kMask><<<blocks, kThreads, 0, stream>>>(px, py, pm, g.outer, g.len);
    });
  });
  return {out, mask};
}

at::Tensor mfm_3_2_cuda(const at::Tensor& x, int64_t dim) { return std::get<0>(mfm3_impl<false>(x, dim)); }

std::tuple<at::Tensor, at::Tensor> mfm_3_2_forward_cuda(const at::Tensor& x, int64_t dim) {
  return mfm3_impl<true>(x, dim);
}

at::Tensor mfm_3_2_backward_cuda(const at::Tensor& grad_in, const at::Tensor& mask_in, int64_t dim) {
  // The checks first: the dispatcher picks this kernel when either tensor is on a GPU, and the
  // guard needs a CUDA device (a CPU grad with a CUDA mask is refused by the check, naming both).
  const MfmBackward operands = mfm_backward_operands(grad_in, mask_in, dim, 3, "mfm_3_2_backward");
  const c10::cuda::CUDAGuard guard(operands.out.device());
  const at::Tensor &grad = operands.grad, &mask = operands.mask, &out = operands.out;
  const SplitGeometry g = operands.g;
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "lightface_mfm_3_2_backward_cuda",
                                  [&] {
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const uint8_t* pm = mask.const_data_ptr<uint8_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int width = pack_width<scalar_t>(g.len, {pg, pm, po});
    const auto stream = c10::cuda::getCurrentCUDAStream();
    launch_packed<scalar_t>(width, g.outer * g.len, [&](auto vec, int64_t blocks) {
      mfm3_backward_kernel<scalar_t, decltype(vec)::value><<<blocks, kThreads, 0, stream>>>(pg, pm, po, g.outer, g.len);
    });
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace lightface

TORCH_LIBRARY_IMPL(lightface, CUDA, m) {
  m.impl("mfm", &lightface::cuda::mfm_cuda);
  m.impl("_mfm_forward", &lightface::cuda::mfm_forward_cuda);
  m.impl("_mfm_backward", &lightface::cuda::mfm_backward_cuda);
  m.impl("mfm_3_2", &lightface::cuda::mfm_3_2_cuda);
  m.impl("_mfm_3_2_forward", &lightface::cuda::mfm_3_2_forward_cuda);
  m.impl("_mfm_3_2_backward", &lightface::cuda::mfm_3_2_backward_cuda);
}
