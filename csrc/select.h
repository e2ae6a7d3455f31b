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

// Indices (0..2) of the maximum and the median of (f0, f1, f2) under that ranking.
template <typename T>
C10_HOST_DEVICE inline void rank3(T f0, T f1, T f2, int& imax, int& imed) {
  const bool one_over_zero = beats(f0, f1);
  const T max01 = one_over_zero ? f1 : f0;
  imax = beats(max01, f2) ? 2 : (one_over_zero ? 1 : 0);
  // The two others in index order (lo < hi); the median is hi only if it ranks above lo.
  const int lo = imax == 0 ? 1 : 0;
  const int hi = imax == 2 ? 1 : 2;
  const T flo = lo == 0 ? f0 : f1;
  const T fhi = hi == 1 ? f1 : f2;
  imed = beats(flo, fhi) ? hi : lo;
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
