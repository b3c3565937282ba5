// The hue op of MoCo v2's ColorJitter as PIL computes it (augment.h's adjust_hue): each pixel
// rounded to 8-bit RGB, to 8-bit HSV (PIL's Convert.c rgb2hsv), its hue byte shifted with
// uint8 wrap-around, back to RGB (hsv2rgb). A float HSV rotation differs from it by ~1.5 grey
// levels on average; this matches it.
#pragma once
#include <array>
#include <cstdint>

namespace cp2::data {

// The hue byte's shift for a hue factor in [-0.5, 0.5] (PIL: int(shift * 255), as uint8).
uint8_t hue_shift_byte(double shift);

// adjust_hue on n pixels of three channel planes in [0, 1]: AVX2 eight at a time where the
// CPU has it and `simd`, the scalar loop otherwise (and for the last n % 8). Both look up
// from the same tables and give the same bits.
void hue_shift_pixels(float* R, float* G, float* B, int64_t n, double shift, bool simd);

// One 8-bit pixel through PIL's path, computed expression by expression: the reference that
// adjust_hue's tables are filled from, and that tests compare it with on every colour.
std::array<uint8_t, 3> pil_hue_shift(int r, int g, int b, uint8_t dh);

}  // namespace cp2::data
