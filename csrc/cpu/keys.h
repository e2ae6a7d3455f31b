// How the CPU loops see a dtype, shared by the MFM and loss kernels.
//
// `Rank<scalar_t>::T` is what the loops load and store and `key(v)` what they compare
// (select.h's `beats` ranks the keys as it ranks the values). float / double: the values.
// float16 / bfloat16: the 16-bit patterns, and a 16-bit integer key with the values' order
// (sign-magnitude to two's complement, so -0 == +0; every NaN the largest key), since the
// scalar half <-> float conversions and copies of the c10::Half / BFloat16 structs do not
// vectorise (they made the kernels 10-50x slower than float32).
//
// `IntRank<scalar_t>` gives integer keys for every dtype (float / double: the 32 / 64-bit
// patterns, keyed the same way), for loops with chained selections: GCC keeps a float
// comparison that feeds only one side of a select inside a branch (it may trap), so such a
// loop stays scalar, while integer comparisons are if-converted and vectorise.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <limits>
#include <type_traits>

namespace lightface {

template <typename scalar_t>
struct Rank {
  using T = scalar_t;
  static T key(T v) { return v; }
};

// Keys of an IEEE format stored as the unsigned integer U (S: the signed integer of its width).
template <typename U, typename S, U kInfBits>  // the bit pattern of +infinity
struct RankBits {
  using T = U;
  static constexpr S kNaNKey = std::numeric_limits<S>::max();  // the key of every NaN (no other value has it)
  static constexpr U kSignBit = U(1) << (8 * sizeof(U) - 1);
  static S key(U bits) {
    const S magnitude = static_cast<S>(bits & ~kSignBit);
    const S key = (bits & kSignBit) ? static_cast<S>(-magnitude) : magnitude;
    return magnitude > static_cast<S>(kInfBits) ? kNaNKey : key;
  }
  // sign(a - b) of the values with keys ka, kb: -1, 0 or +1, and 0 when either is NaN, as
  // select.h's sign_of(float(a) - float(b)) for the 16-bit types (the float difference of two
  // 16-bit values never rounds to 0 or changes sign; inf - inf is NaN, and the keys are equal).
  static S sign(S ka, S kb) {
    const bool nan = (ka == kNaNKey) | (kb == kNaNKey);
    return nan ? S(0) : static_cast<S>((ka > kb) - (ka < kb));
  }
  // The same sign for 16-bit keys, from arithmetic shifts of int32 differences (no bool): GCC
  // vectorises a loop that adds several of these, and not one that adds `sign`s.
  static int16_t sign_sum_term(int32_t ka, int32_t kb) {
    static_assert(sizeof(S) == 2, "sign_sum_term needs the int32 difference of two keys to fit");
    const int32_t d = ka - kb;
    const int32_t nan = ((kNaNKey - 1 - ka) >> 31) | ((kNaNKey - 1 - kb) >> 31);  // all ones if either is NaN
    return static_cast<int16_t>(((d >> 31) - ((-d) >> 31)) & ~nan);
  }
};
template <>
struct Rank<c10::Half> : RankBits<uint16_t, int16_t, 0x7C00> {};
template <>
struct Rank<c10::BFloat16> : RankBits<uint16_t, int16_t, 0x7F80> {};

template <typename scalar_t>
struct IntRank : Rank<scalar_t> {};  // float16 / bfloat16: already integer keys
template <>
struct IntRank<float> : RankBits<uint32_t, int32_t, 0x7F800000u> {};
template <>
struct IntRank<double> : RankBits<uint64_t, int64_t, 0x7FF0000000000000ull> {};

template <typename scalar_t>
constexpr bool kIs16Bit = std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;

// The bits of `v` rounded to the 16-bit type `scalar_t`.
template <typename scalar_t>
inline uint16_t bits16(float v) {
  return static_cast<scalar_t>(v).x;
}

// `t`'s data as the loops see it (`K`: Rank or IntRank).
template <typename scalar_t, template <typename> class K = Rank>
const typename K<scalar_t>::T* loop_data(const at::Tensor& t) {
  return reinterpret_cast<const typename K<scalar_t>::T*>(t.const_data_ptr<scalar_t>());
}
template <typename scalar_t, template <typename> class K = Rank>
typename K<scalar_t>::T* loop_data_mut(const at::Tensor& t) {
  return reinterpret_cast<typename K<scalar_t>::T*>(t.mutable_data_ptr<scalar_t>());
}

}  // namespace lightface
