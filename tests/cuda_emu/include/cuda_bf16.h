#pragma once
// __nv_bfloat16 on the CPU: the top 16 bits of a float, rounded to nearest even; NaN stays NaN.
#include <cstdint>
#include <cstring>
struct __nv_bfloat16 {
  uint16_t bits;
  __nv_bfloat16() = default;
};
inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  __nv_bfloat16 h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    h.bits = uint16_t((u >> 16) | 0x40u);  // quiet NaN
    return h;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  h.bits = uint16_t(u >> 16);
  return h;
}
