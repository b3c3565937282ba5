#include "cp2/data/hue.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <memory>

#include "cp2/data/augment.h"

namespace cp2::data {

namespace {

int clip8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }
int iround(double v) { return static_cast<int>(v + 0.5); }  // v >= 0: C's round()
float clamp01(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }
int to_u8(float v) { return static_cast<int>(clamp01(v) * 255.f + 0.5f); }

// rgb2hsv's hue byte, before the shift, of a pixel that is not grey (mx > mn). It depends on
// the channels' distances below the maximum only, not on the maximum itself: the tables
// below are filled from pixels whose maximum is 255.
uint8_t hue_byte(int r, int g, int b, int mx, int mn) {
  const float cr = static_cast<float>(mx - mn);
  const float rc = (mx - r) / cr, gc = (mx - g) / cr, bc = (mx - b) / cr;
  float h = r == mx ? bc - gc : (g == mx ? 2.0f + rc - bc : 4.0f + gc - rc);
  const double hd = h / 6.0 + 1.0;  // in (0, 2): fmod(hd, 1) without the libm call
  h = static_cast<float>(hd >= 1.0 ? hd - 1.0 : hd);
  return static_cast<uint8_t>(clip8(static_cast<int>(h * 255.0)));
}

// rgb2hsv's saturation byte of a pixel that is not grey.
uint8_t saturation_byte(int mx, int mn) {
  const float s = static_cast<float>(mx - mn) / static_cast<float>(mx);
  return static_cast<uint8_t>(clip8(static_cast<int>(s * 255.0)));
}

// hsv2rgb's sector of the hue circle and position in it, and the saturation as a fraction.
int hue_sector(uint8_t uh) { return static_cast<int>(static_cast<float>(uh) * 6.0 / 255.0); }  // >= 0: floor
float hue_frac(uint8_t uh) {
  return static_cast<float>(static_cast<float>(uh) * 6.0 / 255.0 - hue_sector(uh));
}
float saturation_frac(int us) { return us / 255.0f; }

// hsv2rgb's four candidate bytes for value v and a saturation byte > 0 (as a fraction fs),
// at position f within the hue's case: {v, p, q, t}.
std::array<uint8_t, 4> hsv_candidates(int v, float f, float fs) {
  return {static_cast<uint8_t>(v), static_cast<uint8_t>(clip8(iround(v * (1.0 - fs)))),
          static_cast<uint8_t>(clip8(iround(v * (1.0 - fs * f)))),
          static_cast<uint8_t>(clip8(iround(v * (1.0 - fs * (1.0 - f)))))};
}

// hsv2rgb's choice among them by the hue's case, written as PIL's switch (the reference).
std::array<uint8_t, 3> hsv_to_rgb(int v, int sector, float f, float fs) {
  const auto [V, p, q, t] = hsv_candidates(v, f, fs);
  switch (sector % 6) {
    case 0: return {V, t, p};
    case 1: return {q, V, p};
    case 2: return {p, V, t};
    case 3: return {p, q, V};
    case 4: return {t, p, V};
    default: return {V, p, q};
  }
}

// The per-pixel work that does not depend on the shift, looked up instead of computed (its
// divisions were most of the op's time, and the op ~45 % of a loader thread's at 224 px):
// 0.25 MiB, filled once from the functions above.
struct HueTables {
  // Hue byte by which channel rgb2hsv found at the maximum (r, else g, else b) and the
  // distances below it of the other two, in the order its formula reads them:
  // [0][mx-g][mx-b], [1][mx-r][mx-b], [2][mx-g][mx-r].
  uint8_t hue[3][256][256];
  uint8_t sat[256][256];  // [mx][mx - mn]
  int sector[256];        // hsv2rgb's case (0-5) by hue byte
  float frac[256];        // by hue byte
  float fs[256];          // by saturation byte
  float out[256];         // byte / 255
};

std::unique_ptr<HueTables> make_tables() {
  auto t = std::make_unique<HueTables>();
  for (int d1 = 0; d1 < 256; ++d1)
    for (int d2 = 0; d2 < 256; ++d2) {
      const int mn = 255 - std::max(d1, d2);
      // Where a channel below the maximum sits at distance 0 (the maximum is shared), an
      // earlier channel in the order of tests is the maximum: the entry is never read.
      t->hue[0][d1][d2] = mn < 255 ? hue_byte(255, 255 - d1, 255 - d2, 255, mn) : 0;
      t->hue[1][d1][d2] = mn < 255 && d1 > 0 ? hue_byte(255 - d1, 255, 255 - d2, 255, mn) : 0;
      t->hue[2][d1][d2] = mn < 255 && d1 > 0 && d2 > 0 ? hue_byte(255 - d2, 255 - d1, 255, 255, mn) : 0;
      t->sat[d1][d2] = d2 > 0 && d2 <= d1 ? saturation_byte(d1, d1 - d2) : 0;
    }
  for (int k = 0; k < 256; ++k) {
    t->sector[k] = hue_sector(static_cast<uint8_t>(k)) % 6;  // 6 at byte 255: hsv2rgb's case 0
    t->frac[k] = hue_frac(static_cast<uint8_t>(k));
    t->fs[k] = saturation_frac(k);
    t->out[k] = static_cast<float>(k) / 255.f;
  }
  return t;
}

const HueTables& tables() {
  static const std::unique_ptr<HueTables> t = make_tables();  // thread-safe once (C++11 statics)
  return *t;
}

}  // namespace

uint8_t hue_shift_byte(double shift) { return static_cast<uint8_t>(static_cast<int>(shift * 255.0) & 0xFF); }

std::array<uint8_t, 3> pil_hue_shift(int r, int g, int b, uint8_t dh) {
  const int mx = std::max({r, g, b}), mn = std::min({r, g, b});
  const auto V = static_cast<uint8_t>(mx);
  if (mx == mn) return {V, V, V};
  const auto uh = static_cast<uint8_t>(hue_byte(r, g, b, mx, mn) + dh);
  const int us = saturation_byte(mx, mn);
  if (us == 0) return {V, V, V};
  return hsv_to_rgb(mx, hue_sector(uh), hue_frac(uh), saturation_frac(us));
}

void adjust_hue(at::Tensor& img, double shift) {
  check_float_image(img);
  const auto& T = tables();
  const int64_t n = img.size(1) * img.size(2);
  float* R = img.data_ptr<float>();
  float *G = R + n, *B = G + n;
  const uint8_t dh = hue_shift_byte(shift);
  // hsv2rgb's six cases as which of (v, p, q, t) each channel takes: an index, not a branch
  // whose outcome changes with the pixel's hue.
  static constexpr uint8_t kPick[6][3] = {{0, 3, 1}, {2, 0, 1}, {1, 0, 3}, {1, 2, 0}, {3, 1, 0}, {0, 1, 2}};
  for (int64_t i = 0; i < n; ++i) {
    const int r = to_u8(R[i]), g = to_u8(G[i]), b = to_u8(B[i]);
    const int mx = std::max({r, g, b}), mn = std::min({r, g, b});
    const int us = T.sat[mx][mx - mn];  // 0 for a grey pixel, and for some nearly grey ones
    const int c = r == mx ? 0 : (g == mx ? 1 : 2);
    const uint8_t h = T.hue[c][c == 1 ? mx - r : mx - g][c == 2 ? mx - r : mx - b];
    const auto uh = static_cast<uint8_t>(h + dh);
    const auto o = hsv_candidates(mx, T.frac[uh], T.fs[us]);
    const uint8_t* k = kPick[T.sector[uh]];
    const bool grey = us == 0;
    R[i] = T.out[grey ? mx : o[k[0]]];
    G[i] = T.out[grey ? mx : o[k[1]]];
    B[i] = T.out[grey ? mx : o[k[2]]];
  }
}

}  // namespace cp2::data
