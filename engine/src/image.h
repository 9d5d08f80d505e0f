// Pictures in: decoding (OpenCV), PIL-compatible resizing, per-encoder normalisation.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "mlmamba/result.h"

namespace mlmamba {

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // row-major, RGB interleaved, width * height * 3
};

struct ImageLimits {
  int64_t max_pixels = 64ll << 20;  // width * height before decoding; larger files are refused
  int64_t max_file_bytes = 256ll << 20;
};

// PNG, JPEG, BMP, WebP, TIFF (whatever OpenCV reads); EXIF orientation applied; greyscale expanded
// to RGB; alpha dropped (as PIL's convert("RGB") does). The size is checked from the file's header
// before any pixel is decoded, so absurd dimensions fail fast with bounded memory.
Result<RgbImage> decode_image_file(const std::filesystem::path& path,
                                   const ImageLimits& limits = {});
Result<RgbImage> decode_image_bytes(std::span<const uint8_t> bytes, const ImageLimits& limits = {});

// Bicubic (a = -0.5) with antialiasing, the same arithmetic as PIL's Image.resize(BICUBIC) on an
// 8-bit RGB image (separable passes, fixed-point coefficients, rounding and clipping per pass).
RgbImage resize_bicubic_antialias(const RgbImage& in, int out_width, int out_height);

enum class ResizeMode { kNaive, kLetterbox, kResizeCrop };
Result<ResizeMode> parse_resize_mode(
    const std::string& name);  // "resize-naive" | "letterbox" | "resize-crop"

// Brings a picture to size x size as the model's config says. Letterbox pads both sides of the
// shorter axis by floor((long - short) / 2) with `fill` (0..255 per channel), as the released
// preprocessing does (an odd difference leaves it one pixel short of square), then resizes and
// centre-crops.
RgbImage to_square(const RgbImage& in, int size, ResizeMode mode, const uint8_t fill[3]);

// out[c][y][x] = (pixel / 255 - mean[c]) / std[c], planar CHW floats.
void normalize_chw(const RgbImage& in, const float mean[3], const float std[3], float* out);

}  // namespace mlmamba
