// How the CPU loops see a dtype, shared by the MFM and loss kernels.
//
// `Rank<scalar_t>::T` is what the loops load and store and `key(v)` what they compare
// (select.h's `beats` ranks the keys as it ranks the values). float / double: the values.
// float16 / bfloat16: the 16-bit patterns, and a 16-bit integer key with the values' order
// (sign-magnitude to two's complement, so -0 == +0; every NaN the largest key), since the
// scalar half <-> float conversions and copies of the c10::Half / BFloat16 structs do not
// vectorise (they made the kernels 10-50x slower than float32).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

namespace lightface {

template <typename scalar_t>
struct Rank {
  using T = scalar_t;
  static T key(T v) { return v; }
};

template <int kInfBits>  // the bit pattern of +infinity
struct Rank16 {
  using T = uint16_t;
  static constexpr int16_t kNaNKey = 0x7FFF;  // the key of every NaN (no other value has it)
  static int16_t key(uint16_t bits) {
    const int16_t magnitude = static_cast<int16_t>(bits & 0x7FFF);
    const int16_t key = (bits & 0x8000) ? static_cast<int16_t>(-magnitude) : magnitude;
    return magnitude > kInfBits ? kNaNKey : key;
  }
  // sign(a - b) of the values with keys ka, kb: -1, 0 or +1, and 0 when either is NaN, as
  // select.h's sign_of(float(a) - float(b)) (the float difference of two 16-bit values never
  // rounds to 0 or changes sign; inf - inf is NaN, and the keys are equal).
  static int16_t sign(int16_t ka, int16_t kb) {
    const bool nan = (ka == kNaNKey) | (kb == kNaNKey);
    return nan ? int16_t(0) : static_cast<int16_t>((ka > kb) - (ka < kb));
  }
};
template <>
struct Rank<c10::Half> : Rank16<0x7C00> {};
template <>
struct Rank<c10::BFloat16> : Rank16<0x7F80> {};

template <typename scalar_t>
constexpr bool kIs16Bit = std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;

// The bits of `v` rounded to the 16-bit type `scalar_t`.
template <typename scalar_t>
inline uint16_t bits16(float v) {
  return static_cast<scalar_t>(v).x;
}

// `t`'s data as the loops see it.
template <typename scalar_t>
const typename Rank<scalar_t>::T* loop_data(const at::Tensor& t) {
  return reinterpret_cast<const typename Rank<scalar_t>::T*>(t.const_data_ptr<scalar_t>());
}
template <typename scalar_t>
typename Rank<scalar_t>::T* loop_data_mut(const at::Tensor& t) {
  return reinterpret_cast<typename Rank<scalar_t>::T*>(t.mutable_data_ptr<scalar_t>());
}

}  // namespace lightface
