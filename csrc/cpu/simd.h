// Portable vectorisation for the CPU kernels.
//
// The inner loops are either branch-free loops over plain arrays (the MFM selections) or
// at::vec::Vectorized loops (the loss reductions, whose lanes are independent partial
// sums, so no floating-point reassociation is needed). The extension is built for the baseline
// ISA (SSE2 on x86-64); on GCC/x86-64/Linux LIGHTFACE_SIMD_CLONES additionally emits
// x86-64-v3 (AVX2/FMA/F16C) and x86-64-v4 (AVX-512) clones of a hot loop, and the
// dynamic loader picks the best one for the running CPU (GNU ifunc). Elsewhere it
// expands to nothing and the baseline code runs.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(LIGHTFACE_NO_SIMD_CLONES)
#define LIGHTFACE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LIGHTFACE_SIMD_CLONES
#endif


#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/vec.h>

#include <type_traits>

namespace lightface {

// at::vec::Vectorized of the accumulation type (float for float16/bfloat16/float32,
// double for float64) and loads/stores that convert from/to the storage type.
template <typename scalar_t>
using OpVec = at::vec::Vectorized<at::opmath_type<scalar_t>>;

template <typename scalar_t>
inline OpVec<scalar_t> load_op(const scalar_t* p) {
  using op_t = at::opmath_type<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, op_t>) {
    return OpVec<scalar_t>::loadu(p);
  } else {
    __at_align__ op_t tmp[OpVec<scalar_t>::size()];
    for (int l = 0; l < OpVec<scalar_t>::size(); ++l) tmp[l] = static_cast<op_t>(p[l]);
    return OpVec<scalar_t>::loadu(tmp);
  }
}

template <typename scalar_t>
inline void store_op(scalar_t* p, const OpVec<scalar_t>& v) {
  using op_t = at::opmath_type<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, op_t>) {
    v.store(p);
  } else {
    __at_align__ op_t tmp[OpVec<scalar_t>::size()];
    v.store(tmp);
    for (int l = 0; l < OpVec<scalar_t>::size(); ++l) p[l] = static_cast<scalar_t>(tmp[l]);
  }
}

// Lane-wise sign (+1, -1, 0 for 0 and NaN), like sign_of in select.h.
template <typename V>
inline V sign_vec(const V& d) {
  const V zero(0), one(1);
  return ((d > zero) & one) - ((d < zero) & one);
}

template <typename V>
inline typename V::value_type sum_lanes(const V& v) {
  __at_align__ typename V::value_type tmp[V::size()];
  v.store(tmp);
  typename V::value_type s = 0;
  for (int l = 0; l < V::size(); ++l) s += tmp[l];
  return s;
}

}  // namespace lightface
