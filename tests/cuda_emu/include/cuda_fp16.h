#pragma once
// __half on the CPU: IEEE binary16 through GCC's _Float16 (round to nearest even).
struct __half {
  _Float16 value;
  __half() = default;
};
inline float __half2float(__half h) { return static_cast<float>(h.value); }
inline __half __float2half(float f) {
  __half h;
  h.value = static_cast<_Float16>(f);
  return h;
}
