// Picture input: decoding (formats, orientation, odd pixel layouts, hostile files), PIL-identical
// resampling (fixtures from tools/reference/make_image_fixtures.py), the three square modes and the
// per-encoder normalisation.
#include "image.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <string>
#include <vector>

namespace mlmamba {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kFixtures = fs::path(MLMAMBA_FIXTURES) / "image";

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const fs::path& p, std::span<const uint8_t> b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

RgbImage must_decode(const fs::path& p) {
  auto r = decode_image_file(p);
  EXPECT_TRUE(r.ok()) << p << ": " << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : RgbImage{};
}

struct Diff {
  double mean = 0;
  int max = 0;
  size_t differing = 0;
};

Diff diff(const RgbImage& a, const RgbImage& b) {
  Diff d;
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  if (a.pixels.size() != b.pixels.size() || a.pixels.empty()) {
    d.max = 256;
    return d;
  }
  double sum = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const int e = std::abs(int{a.pixels[i]} - int{b.pixels[i]});
    sum += e;
    d.max = std::max(d.max, e);
    d.differing += e != 0;
  }
  d.mean = sum / static_cast<double>(a.pixels.size());
  return d;
}

// A picture with gradients, hard edges and noise; deterministic per seed.
RgbImage synthetic(int w, int h, uint32_t seed) {
  std::mt19937 rng(seed);
  RgbImage im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  const int bx = static_cast<int>(rng() % std::max(w, 1));
  const int by = static_cast<int>(rng() % std::max(h, 1));
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = im.pixels.data() + (static_cast<size_t>(y) * w + x) * 3;
      p[0] = static_cast<uint8_t>(x * 255 / std::max(w - 1, 1));
      p[1] = static_cast<uint8_t>(y * 255 / std::max(h - 1, 1));
      p[2] = static_cast<uint8_t>(128 + 100 * std::sin(x / 7.0 + y / 11.0));
      if (x > bx && y > by) p[0] = p[1] = 255 - p[2];
      if ((x + y) % 17 == 0) p[2] = static_cast<uint8_t>(rng());
    }
  }
  return im;
}

cv::Mat to_bgr(const RgbImage& im) {
  cv::Mat m(im.height, im.width, CV_8UC3);
  for (int y = 0; y < im.height; ++y) {
    for (int x = 0; x < im.width; ++x) {
      const uint8_t* p = im.pixels.data() + (static_cast<size_t>(y) * im.width + x) * 3;
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(p[2], p[1], p[0]);
    }
  }
  return m;
}

std::vector<uint8_t> encode(const std::string& ext, const cv::Mat& m,
                            const std::vector<int>& params = {}) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(cv::imencode(ext, m, out, params)) << ext;
  return out;
}

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("mlmamba_test_image_" + std::to_string(::getpid()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// ---- a plain reference of PIL's resampling: whole canvas built, whole resize, then the crop ----
// Written for clarity, not speed; the engine computes only the kept window on a virtual canvas.

struct RefTaps {
  std::vector<int> start, n;
  std::vector<std::vector<int32_t>> k;
};

RefTaps ref_taps(int in, int out) {
  RefTaps t;
  const double scale = double(in) / out;
  const double fs_ = std::max(scale, 1.0);
  const double support = 2.0 * fs_;
  for (int xx = 0; xx < out; ++xx) {
    const double center = (xx + 0.5) * scale;
    const int lo = std::max(0, int(center - support + 0.5));
    const int hi = std::min(in, int(center + support + 0.5));
    std::vector<double> w;
    double sum = 0;
    for (int x = lo; x < hi; ++x) {
      double d = std::abs((x - center + 0.5) * (1.0 / fs_));
      double v = d < 1   ? (1.5 * d - 2.5) * d * d + 1
                 : d < 2 ? (((d - 5) * d + 8) * d - 4) * -0.5
                         : 0;
      w.push_back(v);
      sum += v;
    }
    std::vector<int32_t> k;
    for (double v : w) {
      v /= sum;
      k.push_back(int32_t(v < 0 ? v * (1 << 22) - 0.5 : v * (1 << 22) + 0.5));
    }
    t.start.push_back(lo);
    t.n.push_back(hi - lo);
    t.k.push_back(k);
  }
  return t;
}

uint8_t ref_clip(int32_t v) {
  return uint8_t(std::clamp(v >> 22, 0, 255));
}

RgbImage ref_resize(const RgbImage& in, int w, int h) {
  RgbImage mid = in;
  if (w != in.width) {
    const RefTaps t = ref_taps(in.width, w);
    mid = RgbImage{w, in.height, std::vector<uint8_t>(size_t(w) * in.height * 3)};
    for (int y = 0; y < in.height; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c) {
          int32_t a = 1 << 21;
          for (int i = 0; i < t.n[x]; ++i)
            a += in.pixels[(size_t(y) * in.width + t.start[x] + i) * 3 + c] * t.k[x][i];
          mid.pixels[(size_t(y) * w + x) * 3 + c] = ref_clip(a);
        }
  }
  if (h == mid.height) return mid;
  const RefTaps t = ref_taps(mid.height, h);
  RgbImage out{w, h, std::vector<uint8_t>(size_t(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        int32_t a = 1 << 21;
        for (int i = 0; i < t.n[y]; ++i)
          a += mid.pixels[(size_t(t.start[y] + i) * w + x) * 3 + c] * t.k[y][i];
        out.pixels[(size_t(y) * w + x) * 3 + c] = ref_clip(a);
      }
  return out;
}

RgbImage ref_crop(const RgbImage& in, int x0, int y0, int w, int h) {
  RgbImage out{w, h, std::vector<uint8_t>(size_t(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    std::memcpy(&out.pixels[size_t(y) * w * 3], &in.pixels[(size_t(y0 + y) * in.width + x0) * 3],
                size_t(w) * 3);
  return out;
}

int py_round_half(int d) {  // round(d / 2.0) with Python's ties-to-even
  return static_cast<int>(std::nearbyint(d / 2.0));
}

RgbImage ref_resize_crop(const RgbImage& in, int size) {
  const int s = std::min(in.width, in.height), l = std::max(in.width, in.height);
  const int nl = int(double(int64_t(size) * l) / s);
  const int nw = in.width <= in.height ? size : nl;
  const int nh = in.width <= in.height ? nl : size;
  const RgbImage r = ref_resize(in, nw, nh);
  return ref_crop(r, py_round_half(nw - size), py_round_half(nh - size), size, size);
}

RgbImage ref_letterbox(const RgbImage& in, int size, const uint8_t fill[3]) {
  const int m = std::max(in.width, in.height);
  const int px = (m - in.width) / 2, py = (m - in.height) / 2;
  RgbImage c{in.width + 2 * px, in.height + 2 * py, {}};
  c.pixels.resize(size_t(c.width) * c.height * 3);
  for (size_t i = 0; i < c.pixels.size(); ++i) c.pixels[i] = fill[i % 3];
  for (int y = 0; y < in.height; ++y)
    std::memcpy(&c.pixels[(size_t(y + py) * c.width + px) * 3],
                &in.pixels[size_t(y) * in.width * 3], size_t(in.width) * 3);
  return ref_resize_crop(c, size);
}

// ---------------------------------------------------------------------------------------------

TEST(ImageFixtures, ResizesMatchPil) {
  const json manifest = json::parse(std::ifstream(kFixtures / "manifest.json"));
  const auto& fill_j = manifest.at("letterbox_fill");
  const uint8_t fill[3] = {fill_j[0].get<uint8_t>(), fill_j[1].get<uint8_t>(),
                           fill_j[2].get<uint8_t>()};
  int exact = 0;
  int cases = 0;
  for (const json& c : manifest.at("resize")) {
    const std::string src_name = c.at("source");
    const std::string mode = c.at("mode");
    const RgbImage src = must_decode(kFixtures / src_name);
    const RgbImage want = must_decode(kFixtures / c.at("expected").get<std::string>());
    RgbImage got;
    if (mode == "resize") {
      got = resize_bicubic_antialias(src, c.at("width"), c.at("height"));
    } else {
      auto m = parse_resize_mode(mode);
      ASSERT_TRUE(m.ok());
      got = to_square(src, c.at("size"), *m, fill);
    }
    const Diff d = diff(got, want);
    std::printf("  %-22s %-12s -> %3dx%-3d  mean %.4f  max %d  (%zu of %zu values differ)\n",
                src_name.c_str(), mode.c_str(), want.width, want.height, d.mean, d.max, d.differing,
                want.pixels.size());
    EXPECT_LE(d.mean, 0.5) << src_name << " " << mode;
    EXPECT_LE(d.max, 2) << src_name << " " << mode;
    exact += d.max == 0;
    ++cases;
  }
  std::printf("  %d of %d cases identical to PIL\n", exact, cases);
  EXPECT_GE(cases, 40);
  // The PNG sources decode to the bytes PIL sees, so those cases must be bit-exact; only the JPEG
  // source may differ through its decoder.
  EXPECT_GE(exact, cases - 1);
}

TEST(ImageFixtures, DecodesLikePilConvertRgb) {
  const json manifest = json::parse(std::ifstream(kFixtures / "manifest.json"));
  int n = 0;
  for (const json& c : manifest.at("decode")) {
    const std::string src_name = c.at("source");
    const RgbImage got = must_decode(kFixtures / src_name);
    const RgbImage want = must_decode(kFixtures / c.at("expected").get<std::string>());
    const Diff d = diff(got, want);
    std::printf("  %-20s %3dx%-3d mean %.4f max %d  (%s)\n", src_name.c_str(), got.width,
                got.height, d.mean, d.max, c.at("note").get<std::string>().c_str());
    if (c.at("exact").get<bool>()) {
      EXPECT_EQ(d.max, 0) << src_name;
    } else {
      EXPECT_LE(d.mean, 1.0) << src_name;
      EXPECT_LE(d.max, 8) << src_name;
    }
    ++n;
  }
  EXPECT_EQ(n, 7);
}

TEST(ImageResize, WindowedVirtualCanvasEqualsPlainReference) {
  // The engine builds neither the letterbox canvas nor the uncropped resize; a plain reference
  // that does both must agree exactly on many shapes, including odd paddings and near-identity
  // scales.
  std::mt19937 rng(7);
  const uint8_t fill[3] = {123, 116, 103};
  for (int iter = 0; iter < 60; ++iter) {
    const int w = 1 + static_cast<int>(rng() % 90);
    const int h = 1 + static_cast<int>(rng() % 90);
    const int size = 1 + static_cast<int>(rng() % 70);
    const RgbImage im = synthetic(w, h, iter);
    SCOPED_TRACE(std::to_string(w) + "x" + std::to_string(h) + " -> " + std::to_string(size));
    const int ow = 1 + static_cast<int>(rng() % 100);
    const int oh = 1 + static_cast<int>(rng() % 100);
    EXPECT_EQ(diff(resize_bicubic_antialias(im, ow, oh), ref_resize(im, ow, oh)).max, 0);
    EXPECT_EQ(diff(to_square(im, size, ResizeMode::kNaive, fill), ref_resize(im, size, size)).max,
              0);
    EXPECT_EQ(
        diff(to_square(im, size, ResizeMode::kResizeCrop, fill), ref_resize_crop(im, size)).max, 0);
    EXPECT_EQ(
        diff(to_square(im, size, ResizeMode::kLetterbox, fill), ref_letterbox(im, size, fill)).max,
        0);
  }
}

TEST(ImageResize, IdentityAndCropOnly) {
  const RgbImage im = synthetic(50, 70, 3);
  const uint8_t fill[3] = {0, 0, 0};
  EXPECT_EQ(resize_bicubic_antialias(im, 50, 70).pixels, im.pixels);
  // Short side already at size: torchvision does not resample, it only crops (offset
  // round(20 / 2) = 10 rows).
  const RgbImage sq = to_square(im, 50, ResizeMode::kResizeCrop, fill);
  EXPECT_EQ(sq.pixels, ref_crop(im, 0, 10, 50, 50).pixels);
  // Python's round() takes halves to even: 9 / 2 = 4.5 -> 4 and 11 / 2 = 5.5 -> 6.
  const RgbImage im2 = synthetic(40, 49, 4);
  EXPECT_EQ(to_square(im2, 40, ResizeMode::kResizeCrop, fill).pixels,
            ref_crop(im2, 0, 4, 40, 40).pixels);
  const RgbImage im3 = synthetic(51, 40, 5);
  EXPECT_EQ(to_square(im3, 40, ResizeMode::kResizeCrop, fill).pixels,
            ref_crop(im3, 6, 0, 40, 40).pixels);
}

TEST(ImageResize, LetterboxPadsWithFill) {
  // A 4-wide, 20-tall bar letterboxed to 20: eight fill columns either side, untouched by a resize.
  RgbImage bar{4, 20, std::vector<uint8_t>(4 * 20 * 3, 200)};
  const uint8_t fill[3] = {10, 20, 30};
  const RgbImage sq = to_square(bar, 20, ResizeMode::kLetterbox, fill);
  ASSERT_EQ(sq.width, 20);
  ASSERT_EQ(sq.height, 20);
  for (int y = 0; y < 20; ++y) {
    for (int x = 0; x < 20; ++x) {
      const uint8_t* p = &sq.pixels[(y * 20 + x) * 3];
      if (x < 8 || x >= 12) {
        EXPECT_EQ(p[0], 10);
        EXPECT_EQ(p[1], 20);
        EXPECT_EQ(p[2], 30);
      } else {
        EXPECT_EQ(p[0], 200);
      }
    }
  }
}

TEST(ImageResize, ExtremeAspectRatiosStayBounded) {
  // A 1x200000 strip: letterbox would be a 200000x200000 canvas and resize-crop a 384x76800000
  // intermediate if either were built. Both finish with the right size.
  const RgbImage strip = synthetic(1, 200000, 9);
  const uint8_t fill[3] = {1, 2, 3};
  for (ResizeMode m : {ResizeMode::kNaive, ResizeMode::kLetterbox, ResizeMode::kResizeCrop}) {
    const auto t0 = std::chrono::steady_clock::now();
    const RgbImage sq = to_square(strip, 384, m, fill);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  1x200000 strip, mode %d: %.0f ms\n", static_cast<int>(m), ms);
    EXPECT_EQ(sq.width, 384);
    EXPECT_EQ(sq.height, 384);
    EXPECT_EQ(sq.pixels.size(), 384u * 384 * 3);
  }
  // Letterbox: the strip sits in the middle column(s); the far left is pure fill.
  const RgbImage lb = to_square(strip, 384, ResizeMode::kLetterbox, fill);
  EXPECT_EQ(lb.pixels[0], 1);
  EXPECT_EQ(lb.pixels[1], 2);
  EXPECT_EQ(lb.pixels[2], 3);
}

TEST(ImageResize, DegenerateArgumentsGiveEmptyPictures) {
  const RgbImage im = synthetic(5, 5, 1);
  const uint8_t fill[3] = {0, 0, 0};
  EXPECT_TRUE(resize_bicubic_antialias(im, 0, 5).pixels.empty());
  EXPECT_TRUE(resize_bicubic_antialias(RgbImage{}, 5, 5).pixels.empty());
  EXPECT_TRUE(resize_bicubic_antialias(RgbImage{5, 5, {1, 2, 3}}, 5, 5).pixels.empty());
  EXPECT_TRUE(to_square(im, 0, ResizeMode::kNaive, fill).pixels.empty());
}

TEST(ImageResize, ParseMode) {
  EXPECT_EQ(*parse_resize_mode("resize-naive"), ResizeMode::kNaive);
  EXPECT_EQ(*parse_resize_mode("letterbox"), ResizeMode::kLetterbox);
  EXPECT_EQ(*parse_resize_mode("resize-crop"), ResizeMode::kResizeCrop);
  auto bad = parse_resize_mode("stretch");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("stretch"), std::string::npos);
}

// ---- decoding ----

TEST(ImageDecode, FormatsRoundTrip) {
  TempDir tmp;
  const RgbImage im = synthetic(123, 77, 11);
  const cv::Mat bgr = to_bgr(im);
  struct Case {
    std::string ext;
    std::vector<int> params;
    bool lossless;
  };
  const std::vector<Case> cases = {
      {".png", {}, true},
      {".bmp", {}, true},
      {".tiff", {}, true},
      {".webp", {cv::IMWRITE_WEBP_QUALITY, 101}, true},  // above 100 selects lossless
      {".webp", {cv::IMWRITE_WEBP_QUALITY, 90}, false},
      {".jpg", {cv::IMWRITE_JPEG_QUALITY, 95}, false},
      {".jpg", {cv::IMWRITE_JPEG_QUALITY, 90, cv::IMWRITE_JPEG_PROGRESSIVE, 1}, false},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::vector<uint8_t> bytes = encode(c.ext, bgr, c.params);
    const fs::path p = tmp.path() / ("pic" + std::to_string(i++) + c.ext);
    write_bytes(p, bytes);
    const RgbImage got = must_decode(p);
    auto from_bytes = decode_image_bytes(bytes);
    ASSERT_TRUE(from_bytes.ok()) << c.ext << ": " << from_bytes.error().message;
    EXPECT_EQ(from_bytes->pixels, got.pixels) << c.ext;
    const Diff d = diff(got, im);
    std::printf("  %-5s %s: mean %.3f max %d\n", c.ext.c_str(), c.lossless ? "lossless" : "lossy",
                d.mean, d.max);
    if (c.lossless) {
      EXPECT_EQ(d.max, 0) << c.ext;
    } else {
      // Lossy (the test picture's noise costs a few levels), but far below the ~80 of swapped
      // channels or a shifted picture.
      EXPECT_LE(d.mean, 8.0) << c.ext;
    }
  }
}

TEST(ImageDecode, CompleteFilesWithExtrasAreNotMistakenForBrokenOnes) {
  const RgbImage im = synthetic(40, 30, 12);
  const cv::Mat bgr = to_bgr(im);
  // Bytes after the end marker (some cameras and tools append data) are ignored by decoders.
  for (const std::string ext : {".jpg", ".png"}) {
    std::vector<uint8_t> b = encode(ext, bgr);
    const auto plain = decode_image_bytes(b);
    ASSERT_TRUE(plain.ok()) << ext << ": " << plain.error().message;
    b.insert(b.end(), 100, 0xff);
    b.push_back(0x00);
    auto r = decode_image_bytes(b);
    ASSERT_TRUE(r.ok()) << ext << ": " << r.error().message;
    EXPECT_EQ(r->pixels, plain->pixels) << ext;
  }
  // A JPEG comment holding an end-of-image marker's bytes, skipped by its length.
  std::vector<uint8_t> jpg = encode(".jpg", bgr);
  const std::vector<uint8_t> com = {0xff, 0xfe, 0x00, 0x06, 0xff, 0xd9, 0xff, 0xd9};
  jpg.insert(jpg.begin() + 2, com.begin(), com.end());
  auto r = decode_image_bytes(jpg);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_LE(diff(*r, im).mean, 8.0);
  // Cut inside the scan, the same file is refused even though the comment held "FF D9".
  jpg.resize(jpg.size() - 100);
  EXPECT_FALSE(decode_image_bytes(jpg).ok());
}

TEST(ImageDecode, GreyAlphaAndSixteenBit) {
  // Grey: replicated into R, G, B.
  cv::Mat grey(3, 4, CV_8UC1);
  for (int i = 0; i < 12; ++i) grey.data[i] = static_cast<uint8_t>(i * 20);
  // BGRA with alpha 0 in places: alpha is dropped, the stored colour kept (no compositing).
  cv::Mat bgra(2, 2, CV_8UC4, cv::Scalar(10, 20, 30, 0));
  bgra.at<cv::Vec4b>(1, 1) = cv::Vec4b(40, 50, 60, 255);
  // 16 bits: the high byte, whatever the low byte holds.
  cv::Mat grey16(1, 3, CV_16UC1);
  grey16.at<uint16_t>(0, 0) = 0x12ff;
  grey16.at<uint16_t>(0, 1) = 0xff00;
  grey16.at<uint16_t>(0, 2) = 0x8080;
  cv::Mat bgr16(1, 1, CV_16UC3, cv::Scalar(0x1000, 0x20ff, 0x3080));
  cv::Mat bgra16(1, 1, CV_16UC4, cv::Scalar(0x1000, 0x2000, 0x3000, 0));

  for (const std::string ext : {".png", ".tiff"}) {
    SCOPED_TRACE(ext);
    auto g = decode_image_bytes(encode(ext, grey));
    ASSERT_TRUE(g.ok()) << g.error().message;
    ASSERT_EQ(g->pixels.size(), 36u);
    for (int i = 0; i < 12; ++i) {
      EXPECT_EQ(g->pixels[i * 3 + 0], i * 20);
      EXPECT_EQ(g->pixels[i * 3 + 1], i * 20);
      EXPECT_EQ(g->pixels[i * 3 + 2], i * 20);
    }
    auto a = decode_image_bytes(encode(ext, bgra));
    ASSERT_TRUE(a.ok()) << a.error().message;
    EXPECT_EQ(a->pixels, (std::vector<uint8_t>{30, 20, 10, 30, 20, 10, 30, 20, 10, 60, 50, 40}));
    // PNG keeps the high byte (as PIL does); OpenCV's TIFF reader rounds instead (value / 256 to
    // nearest), one level apart at most.
    const int slack = ext == ".png" ? 0 : 1;
    auto near = [&](const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_GE(got[i], want[i]) << i;
        EXPECT_LE(got[i], want[i] + slack) << i;
      }
    };
    auto g16 = decode_image_bytes(encode(ext, grey16));
    ASSERT_TRUE(g16.ok()) << g16.error().message;
    near(g16->pixels, {0x12, 0x12, 0x12, 0xff, 0xff, 0xff, 0x80, 0x80, 0x80});
    auto c16 = decode_image_bytes(encode(ext, bgr16));
    ASSERT_TRUE(c16.ok()) << c16.error().message;
    near(c16->pixels, {0x30, 0x20, 0x10});
    auto a16 = decode_image_bytes(encode(ext, bgra16));
    ASSERT_TRUE(a16.ok()) << a16.error().message;
    near(a16->pixels, {0x30, 0x20, 0x10});
  }
  // Grey JPEG and BMP too.
  for (const std::string ext : {".jpg", ".bmp"}) {
    cv::Mat flat(8, 8, CV_8UC1, cv::Scalar(77));
    auto g = decode_image_bytes(encode(ext, flat));
    ASSERT_TRUE(g.ok()) << ext << ": " << g.error().message;
    for (uint8_t v : g->pixels) EXPECT_NEAR(v, 77, 1) << ext;
  }
}

// The fixture JPEG with its EXIF orientation value replaced.
std::vector<uint8_t> exif_jpeg_with_orientation(int orientation) {
  std::vector<uint8_t> b = read_bytes(kFixtures / "exif6_60x40.jpg");
  // Big-endian TIFF entry: tag 0x0112, type SHORT (3), count 1, value.
  const uint8_t entry[] = {0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06};
  auto it = std::search(b.begin(), b.end(), std::begin(entry), std::end(entry));
  EXPECT_NE(it, b.end()) << "orientation entry not found in the fixture";
  if (it != b.end()) it[9] = static_cast<uint8_t>(orientation);
  return b;
}

TEST(ImageDecode, ExifOrientationGivesUprightPictures) {
  auto stored_r = decode_image_bytes(exif_jpeg_with_orientation(1));
  ASSERT_TRUE(stored_r.ok()) << stored_r.error().message;
  const RgbImage& s = *stored_r;
  ASSERT_EQ(s.width, 60);
  ASSERT_EQ(s.height, 40);
  const int W = s.width, H = s.height;
  auto at = [&](int x, int y) { return &s.pixels[(static_cast<size_t>(y) * W + x) * 3]; };
  for (int o = 2; o <= 8; ++o) {
    SCOPED_TRACE("orientation " + std::to_string(o));
    auto r = decode_image_bytes(exif_jpeg_with_orientation(o));
    ASSERT_TRUE(r.ok()) << r.error().message;
    const bool turned = o >= 5;
    ASSERT_EQ(r->width, turned ? H : W);
    ASSERT_EQ(r->height, turned ? W : H);
    int wrong = 0;
    for (int y = 0; y < r->height; ++y) {
      for (int x = 0; x < r->width; ++x) {
        // Which stored pixel the EXIF specification shows at (x, y).
        int sx = x, sy = y;
        switch (o) {
          case 2:
            sx = W - 1 - x;
            break;
          case 3:
            sx = W - 1 - x;
            sy = H - 1 - y;
            break;
          case 4:
            sy = H - 1 - y;
            break;
          case 5:
            sx = y;
            sy = x;
            break;
          case 6:
            sx = y;
            sy = H - 1 - x;
            break;
          case 7:
            sx = W - 1 - y;
            sy = H - 1 - x;
            break;
          case 8:
            sx = W - 1 - y;
            sy = x;
            break;
        }
        wrong += std::memcmp(&r->pixels[(static_cast<size_t>(y) * r->width + x) * 3], at(sx, sy),
                             3) != 0;
      }
    }
    EXPECT_EQ(wrong, 0);
  }
  // And orientation 6 against PIL's exif_transpose (the fixture's own expectation).
  const RgbImage six = must_decode(kFixtures / "exif6_60x40.jpg");
  EXPECT_EQ(six.width, 40);
  EXPECT_EQ(six.height, 60);
  EXPECT_LE(diff(six, must_decode(kFixtures / "exif6_60x40__rgb.png")).max, 8);
}

// ---- hostile and broken input ----

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}
std::string le16(uint32_t v) {
  return {static_cast<char>(v), static_cast<char>(v >> 8)};
}
std::string le32(uint32_t v) {
  return le16(v & 0xffff) + le16(v >> 16);
}
std::string be16(uint32_t v) {
  return {static_cast<char>(v >> 8), static_cast<char>(v)};
}

// CRC-32 bit by bit, independent of the engine's table-driven one.
uint32_t bitwise_crc32(std::span<const uint8_t> data) {
  uint32_t c = 0xffffffffu;
  for (uint8_t v : data) {
    c ^= v;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return ~c;
}

std::vector<uint8_t> bytes_of(const std::string& s) {
  return {s.begin(), s.end()};
}

std::string png_chunk(const std::string& type, const std::string& data) {
  // The CRC is left at zero: the size check must refuse these before anything reads it.
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(0);
}

std::string png_header(uint32_t w, uint32_t h) {
  return std::string("\x89PNG\r\n\x1a\n", 8) +
         png_chunk("IHDR", be32(w) + be32(h) + std::string("\x08\x02\x00\x00\x00", 5)) +
         png_chunk("IDAT", std::string(16, '\0')) + png_chunk("IEND", "");
}

std::string jpeg_header(uint32_t w, uint32_t h) {
  return std::string("\xff\xd8", 2) + std::string("\xff\xc0", 2) + be16(17) + '\x08' + be16(h) +
         be16(w) + '\x03' + std::string(9, '\x01') + std::string("\xff\xd9", 2);
}

std::string bmp_header(int32_t w, int32_t h) {
  return "BM" + le32(54) + le32(0) + le32(54) + le32(40) + le32(static_cast<uint32_t>(w)) +
         le32(static_cast<uint32_t>(h)) + le16(1) + le16(24) + le32(0) + std::string(20, '\0');
}

std::string webp_vp8x(uint32_t w, uint32_t h) {
  const std::string chunk = "VP8X" + le32(10) + std::string(4, '\0') + le32(w - 1).substr(0, 3) +
                            le32(h - 1).substr(0, 3);
  return "RIFF" + le32(static_cast<uint32_t>(4 + chunk.size())) + "WEBP" + chunk;
}

std::string webp_vp8l(uint32_t w, uint32_t h) {
  const std::string chunk =
      "VP8L" + le32(5) + '\x2f' + le32((w - 1) | ((h - 1) << 14)) + std::string(1, '\0');
  return "RIFF" + le32(static_cast<uint32_t>(4 + chunk.size())) + "WEBP" + chunk;
}

std::string gif_header(uint32_t w, uint32_t h) {
  return "GIF89a" + le16(w) + le16(h) + std::string("\x00\x00\x00", 3) + ";";
}

std::string tiff_header(uint32_t w, uint32_t h) {
  // Little-endian, one directory of two LONG entries.
  return std::string("II\x2a\x00", 4) + le32(8) + le16(2) + le16(256) + le16(4) + le32(1) +
         le32(w) + le16(257) + le16(4) + le32(1) + le32(h) + le32(0);
}

void expect_error(const Result<RgbImage>& r, ErrorCode code, const std::string& needle,
                  const std::string& what) {
  ASSERT_FALSE(r.ok()) << what << " decoded as " << r->width << "x" << r->height;
  EXPECT_EQ(r.error().code, code) << what << ": " << r.error().message;
  EXPECT_NE(r.error().message.find(needle), std::string::npos)
      << what << ": \"" << r.error().message << "\" lacks \"" << needle << "\"";
}

TEST(ImageDecode, HugeHeadersRefusedBeforeDecoding) {
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"PNG", png_header(30000, 30000)},    {"JPEG", jpeg_header(65000, 65000)},
      {"BMP", bmp_header(40000, -40000)},   {"WebP", webp_vp8x(16000, 16000)},
      {"WebP", webp_vp8l(16384, 16384)},    {"GIF", gif_header(65535, 65535)},
      {"TIFF", tiff_header(100000, 100000)}};
  for (const auto& [fmt, h] : headers) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = decode_image_bytes(bytes_of(h));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    expect_error(r, ErrorCode::kLimitExceeded, "over the limit", fmt);
    // A generous bound: a decoder that tried to allocate and fill the picture would take far
    // longer (or hang); the header path itself takes microseconds.
    EXPECT_LT(s, 2.0) << fmt;
    std::printf("  %-4s refused in %.3f ms: %s\n", fmt.c_str(), s * 1e3,
                r.ok() ? "" : r.error().message.c_str());
  }
  // The reported size is the header's.
  auto png = decode_image_bytes(bytes_of(png_header(30000, 30000)));
  expect_error(png, ErrorCode::kLimitExceeded, "30000x30000", "PNG");
  // A long side over OpenCV's limit is refused by name even with few pixels.
  expect_error(decode_image_bytes(bytes_of(png_header(2000000, 1))), ErrorCode::kLimitExceeded,
               "sides longer than", "long PNG");
  // Caller limits apply to ordinary pictures.
  ImageLimits tight;
  tight.max_pixels = 1000;
  expect_error(decode_image_file(kFixtures / "src_100x37.png", tight), ErrorCode::kLimitExceeded,
               "100x37", "tight limit");
  tight.max_pixels = 3700;
  EXPECT_TRUE(decode_image_file(kFixtures / "src_100x37.png", tight).ok());
}

TEST(ImageDecode, EmptyPicturesRefused) {
  expect_error(decode_image_bytes(bytes_of(png_header(0, 10))), ErrorCode::kCorruptFile, "empty",
               "PNG 0 wide");
  expect_error(decode_image_bytes(bytes_of(jpeg_header(0, 10))), ErrorCode::kCorruptFile, "empty",
               "JPEG 0 wide");
  expect_error(decode_image_bytes(bytes_of(bmp_header(10, 0))), ErrorCode::kCorruptFile, "empty",
               "BMP 0 tall");
  expect_error(decode_image_bytes(bytes_of(gif_header(0, 0))), ErrorCode::kCorruptFile, "empty",
               "GIF 0x0");
  expect_error(decode_image_bytes(bytes_of(tiff_header(5, 0))), ErrorCode::kCorruptFile, "empty",
               "TIFF 5x0");
}

TEST(ImageDecode, BrokenFilesGiveClearErrorsNamingTheFile) {
  TempDir tmp;
  const cv::Mat bgr = to_bgr(synthetic(64, 48, 2));
  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    ErrorCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back({"empty.png", {}, ErrorCode::kCorruptFile, "empty file"});
  cases.push_back({"notes.png", bytes_of("This is a text file, not a picture.\n"),
                   ErrorCode::kUnsupported, "not a picture"});
  cases.push_back({"tiny.jpg", bytes_of("\xff\xd8\xff"), ErrorCode::kCorruptFile, "truncated"});
  for (const std::string ext : {".png", ".jpg", ".bmp", ".webp"}) {
    std::vector<int> params;
    if (ext == ".jpg") params = {cv::IMWRITE_JPEG_QUALITY, 90};
    std::vector<uint8_t> whole = encode(ext, bgr, params);
    // Cut in half, and also just before the final marker/chunk, where a lenient decoder would
    // happily return a nearly complete picture.
    for (size_t keep : {whole.size() / 2, whole.size() - 2}) {
      std::vector<uint8_t> cut(whole.begin(), whole.begin() + static_cast<ptrdiff_t>(keep));
      cases.push_back(
          {"cut" + std::to_string(keep) + ext, cut, ErrorCode::kCorruptFile, "truncated"});
    }
  }
  // A progressive JPEG cut mid-way.
  {
    std::vector<uint8_t> prog =
        encode(".jpg", bgr, {cv::IMWRITE_JPEG_QUALITY, 90, cv::IMWRITE_JPEG_PROGRESSIVE, 1});
    prog.resize(prog.size() * 2 / 3);
    cases.push_back({"progressive_cut.jpg", prog, ErrorCode::kCorruptFile, "truncated"});
  }
  // A PNG whose compressed data is damaged while every chunk is present: caught by the CRC; and
  // the same with the CRC made to match, which only libpng can notice (it also says so on stderr).
  {
    std::vector<uint8_t> png = encode(".png", bgr);
    const uint8_t idat[] = {'I', 'D', 'A', 'T'};
    auto it = std::search(png.begin(), png.end(), std::begin(idat), std::end(idat));
    ASSERT_NE(it, png.end());
    for (int i = 8; i < 40; ++i) it[i] ^= 0x5a;
    cases.push_back({"damaged.png", png, ErrorCode::kCorruptFile, "IDAT fails its CRC"});
    const size_t at = static_cast<size_t>(it - png.begin());
    const uint32_t len = (uint32_t{png[at - 4]} << 24) | (uint32_t{png[at - 3]} << 16) |
                         (uint32_t{png[at - 2]} << 8) | png[at - 1];
    const uint32_t crc = bitwise_crc32(std::span(png).subspan(at, len + 4));
    for (int i = 0; i < 4; ++i) png[at + 4 + len + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
    cases.push_back(
        {"damaged_crc_ok.png", png, ErrorCode::kCorruptFile, "PNG data could not be decoded"});
  }
  // OpenCV writes the TIFF directory last, so a cut file loses it.
  {
    std::vector<uint8_t> tif = encode(".tiff", bgr);
    tif.resize(tif.size() / 2);
    cases.push_back({"cut.tiff", tif, ErrorCode::kCorruptFile, "truncated TIFF"});
  }
  cases.push_back({"junk.gif", bytes_of(gif_header(4, 4)), ErrorCode::kUnsupported, "GIF"});

  for (const Case& c : cases) {
    const fs::path p = tmp.path() / c.name;
    write_bytes(p, c.bytes);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = decode_image_file(p);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    expect_error(r, c.code, c.needle, c.name);
    if (!r.ok()) {
      EXPECT_NE(r.error().message.find(p.string()), std::string::npos) << r.error().message;
      std::printf("  %-22s %.2f ms  %s\n", c.name.c_str(), ms, r.error().message.c_str());
    }
    // The same bytes without a file: the same error, minus the name.
    auto rb = decode_image_bytes(c.bytes);
    ASSERT_FALSE(rb.ok()) << c.name;
    EXPECT_EQ(rb.error().code, c.code);
  }
}

TEST(ImageDecode, FileLevelErrors) {
  TempDir tmp;
  const fs::path missing = tmp.path() / "no_such_picture.png";
  expect_error(decode_image_file(missing), ErrorCode::kNotFound, missing.string(), "missing");
  expect_error(decode_image_file(tmp.path() / "nodir" / "x.png"), ErrorCode::kNotFound, "nodir",
               "missing folder");
  expect_error(decode_image_file(tmp.path()), ErrorCode::kInvalidArgument, "not a regular file",
               "directory");

  const fs::path big = kFixtures / "src_640x480.png";
  ImageLimits small;
  small.max_file_bytes = 1000;
  expect_error(decode_image_file(big, small), ErrorCode::kLimitExceeded, big.string(),
               "over byte limit");
  expect_error(decode_image_bytes(read_bytes(big), small), ErrorCode::kLimitExceeded,
               "over the limit", "over byte limit (bytes)");
}

TEST(ImageDecode, LargeJpegDecodeAndResizeTime) {
  // Timing is printed, not asserted: machines differ. A 12-megapixel photo is the common case.
  const RgbImage big = synthetic(4000, 3000, 21);
  const std::vector<uint8_t> jpg = encode(".jpg", to_bgr(big), {cv::IMWRITE_JPEG_QUALITY, 90});
  const uint8_t fill[3] = {0, 0, 0};
  const auto t0 = std::chrono::steady_clock::now();
  auto r = decode_image_bytes(jpg);
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(r.ok()) << r.error().message;
  const RgbImage sq = to_square(*r, 384, ResizeMode::kNaive, fill);
  const auto t2 = std::chrono::steady_clock::now();
  const RgbImage crop = to_square(*r, 384, ResizeMode::kResizeCrop, fill);
  const auto t3 = std::chrono::steady_clock::now();
  const RgbImage lb = to_square(*r, 384, ResizeMode::kLetterbox, fill);
  const auto t4 = std::chrono::steady_clock::now();
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  std::printf(
      "  4000x3000 JPEG (%zu KiB): decode %.0f ms, resize-naive to 384 %.0f ms "
      "(total %.0f ms); resize-crop %.0f ms, letterbox %.0f ms\n",
      jpg.size() / 1024, ms(t0, t1), ms(t1, t2), ms(t0, t2), ms(t2, t3), ms(t3, t4));
  EXPECT_EQ(sq.width, 384);
  EXPECT_EQ(crop.width, 384);
  EXPECT_EQ(lb.width, 384);
  EXPECT_EQ(r->width, 4000);
  EXPECT_EQ(r->height, 3000);
}

// ---- normalisation ----

TEST(ImageNormalize, PlanarValuesAsTorchvision) {
  // Two pixels: (0, 128, 255) and (255, 0, 51).
  const RgbImage im{2, 1, {0, 128, 255, 255, 0, 51}};
  const float mean[3] = {0.485f, 0.456f, 0.406f};
  const float stdv[3] = {0.229f, 0.224f, 0.225f};
  float out[6];
  normalize_chw(im, mean, stdv, out);
  // Planar: R of both pixels, then G, then B.
  const uint8_t planar[6] = {0, 255, 128, 0, 255, 51};
  for (int i = 0; i < 6; ++i) {
    const int c = i / 2;
    const float want = (static_cast<float>(planar[i]) / 255.0f - mean[c]) / stdv[c];
    EXPECT_EQ(out[i], want) << i;  // same float operations: bit-identical
  }
  EXPECT_NEAR(out[0], -2.1179039f, 1e-6f);
  EXPECT_NEAR(out[1], 2.2489083f, 1e-6f);
  EXPECT_NEAR(out[2], (128 / 255.0 - 0.456) / 0.224, 1e-6);

  // SigLIP's 0.5 / 0.5 maps 0 and 255 exactly onto -1 and 1.
  const float half[3] = {0.5f, 0.5f, 0.5f};
  normalize_chw(im, half, half, out);
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_NEAR(out[5], (51 / 255.0 - 0.5) / 0.5, 1e-6);
}

}  // namespace
}  // namespace mlmamba
