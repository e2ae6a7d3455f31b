// Portable vectorisation for the CPU kernels.
//
// The inner loops are plain branch-free loops that GCC/Clang vectorise at -O3: the MFM
// selections element by element, the loss reductions of one image row with
// `#pragma omp simd reduction` (the extension is built with OpenMP; the lane order is
// fixed, so sums do not depend on the thread count). We do not
// use at::vec::Vectorized here: an extension is compiled without ATen's CPU_CAPABILITY
// flags, so it gets the generic Vectorized whose comparisons and bitwise ops go through
// per-lane memset/memcpy; measured on this project's kernels it was 10-100x slower than
// the loops below (see docs/ops.md).
//
// The extension is built for the baseline ISA (SSE2 on x86-64); on GCC/x86-64/Linux
// LIGHTFACE_SIMD_CLONES additionally emits x86-64-v3 (AVX2/FMA/F16C) and x86-64-v4
// (AVX-512) clones of a hot loop, and the dynamic loader picks the best one for the
// running CPU (GNU ifunc). Elsewhere it expands to nothing and the baseline code runs.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(LIGHTFACE_NO_SIMD_CLONES)
#define LIGHTFACE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LIGHTFACE_SIMD_CLONES
#endif

namespace lightface {

template <typename T>
inline T abs_of(T v) {
  return v < T(0) ? -v : v;
}

}  // namespace lightface
