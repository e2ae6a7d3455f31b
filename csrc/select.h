// Selection rules of MFM 2/1 and 3/2, shared by the CPU and CUDA kernels.
//
// Ranking is a stable descending sort with NaN largest: `b` ranks above `a` when it is
// strictly larger, or NaN while `a` is not. Ties keep the earlier input, so MFM 2/1 sends
// the gradient to the first half on ties, and NaN inputs propagate.
#pragma once

#include <c10/macros/Macros.h>

namespace lightface {

template <typename T>
C10_HOST_DEVICE inline bool beats(T a, T b) {
  return (b > a) | ((b != b) & (a == a));
}

// Indices (0..2) of the maximum and the median of (f0, f1, f2) under that ranking
// (branch-free selects, so CPU loops vectorise).
template <typename T>
C10_HOST_DEVICE inline void rank3(T f0, T f1, T f2, int& imax, int& imed) {
  const bool one_over_zero = beats(f0, f1);
  const T max01 = one_over_zero ? f1 : f0;
  const bool two_is_max = beats(max01, f2);
  imax = two_is_max ? 2 : (one_over_zero ? 1 : 0);
  // The median is the higher-ranked of the two others (the earlier one on ties).
  const int med_if_one_max = beats(f0, f2) ? 2 : 0;
  const int med_if_zero_max = beats(f1, f2) ? 2 : 1;
  imed = two_is_max ? (one_over_zero ? 1 : 0) : (one_over_zero ? med_if_one_max : med_if_zero_max);
}

// v[i] for i in 0..2 as selects (no indexed load).
template <typename T>
C10_HOST_DEVICE inline T pick3(int i, T v0, T v1, T v2) {
  return i == 2 ? v2 : (i == 1 ? v1 : v0);
}

// 1-byte mask of MFM 3/2: both indices.
C10_HOST_DEVICE inline unsigned char pack_rank3(int imax, int imed) {
  return static_cast<unsigned char>(imax | (imed << 2));
}
C10_HOST_DEVICE inline int mask_max(unsigned char m) { return m & 3; }
C10_HOST_DEVICE inline int mask_median(unsigned char m) { return (m >> 2) & 3; }

// sign(d) as torch defines it for real numbers: +1, -1, or 0 for 0 and NaN.
template <typename T>
C10_HOST_DEVICE inline T sign_of(T d) {
  return static_cast<T>((d > T(0)) - (d < T(0)));
}

}  // namespace lightface
