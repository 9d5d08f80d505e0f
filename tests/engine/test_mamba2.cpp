// The Mamba-2 mixer against a plain double-precision transcription of its definition, and the
// chunked scan against the recurrence at every length that crosses a chunk boundary.
#include "mamba2.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace mlmamba {
namespace {

struct RandomMixer {
  Mamba2Dims d;
  std::vector<float> in_proj, conv_w, conv_b, dt_bias, A_log, D, norm, out_proj;
  MixerWeights w;

  RandomMixer(int ngroups, int chunk, uint32_t seed) {
    d.d_model = 24;
    d.headdim = 8;
    d.nheads = 6;
    d.d_inner = 48;
    d.d_state = 12;
    d.ngroups = ngroups;
    d.d_conv = 4;
    d.chunk_size = chunk;
    d.norm_group_size = d.d_inner / ngroups;
    d.norm_eps = 1e-5f;
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0, 1);
    std::uniform_real_distribution<float> u01(0, 1);
    auto fill = [&](std::vector<float>& v, size_t count, float scale, float offset = 0) {
      v.resize(count);
      for (auto& x : v) x = offset + scale * n01(rng);
    };
    fill(in_proj, static_cast<size_t>(d.d_in_proj()) * d.d_model, 1.0f / std::sqrt(24.0f));
    fill(conv_w, static_cast<size_t>(d.conv_dim()) * d.d_conv, 0.3f);
    fill(conv_b, d.conv_dim(), 0.1f);
    dt_bias.resize(d.nheads);
    A_log.resize(d.nheads);
    for (int h = 0; h < d.nheads; ++h) {
      const float dt = std::exp(std::log(0.001f) + u01(rng) * (std::log(0.1f) - std::log(0.001f)));
      dt_bias[h] = dt + std::log(-std::expm1(-dt));  // inverse softplus
      A_log[h] = std::log(1.0f + 15.0f * u01(rng));
    }
    fill(D, d.nheads, 0.2f, 1.0f);
    fill(norm, d.d_inner, 0.1f, 1.0f);
    fill(out_proj, static_cast<size_t>(d.d_model) * d.d_inner, 1.0f / std::sqrt(48.0f));
    w.in_proj = in_proj.data();
    w.scan = {conv_w.data(), conv_b.data(), dt_bias.data(), A_log.data(), D.data()};
    w.norm = norm.data();
    w.out_proj = out_proj.data();
  }
};

std::vector<float> random_rows(int T, int width, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0, 1);
  std::vector<float> v(static_cast<size_t>(T) * width);
  for (auto& x : v) x = n01(rng);
  return v;
}

double rel_error(const std::vector<float>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

// docs/MODEL.md §3 transcribed literally, in double, one token at a time.
std::vector<double> reference_mixer(const RandomMixer& m, const std::vector<float>& x, int T) {
  const Mamba2Dims& d = m.d;
  const int W = d.d_in_proj(), CD = d.conv_dim(), P = d.headdim, N = d.d_state;
  std::vector<double> proj(static_cast<size_t>(T) * W);
  for (int t = 0; t < T; ++t)
    for (int o = 0; o < W; ++o) {
      double s = 0;
      for (int i = 0; i < d.d_model; ++i)
        s += double(m.in_proj[o * d.d_model + i]) * x[t * d.d_model + i];
      proj[t * W + o] = s;
    }
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  std::vector<double> xbc(static_cast<size_t>(T) * CD);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < CD; ++c) {
      double s = m.conv_b[c];
      for (int k = 0; k < d.d_conv; ++k) {
        const int j = t - (d.d_conv - 1) + k;
        if (j >= 0) s += double(m.conv_w[c * d.d_conv + k]) * proj[j * W + d.d_inner + c];
      }
      xbc[t * CD + c] = silu(s);
    }
  std::vector<double> S(static_cast<size_t>(d.nheads) * P * N, 0.0),
      y(static_cast<size_t>(T) * d.d_inner);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < d.nheads; ++h) {
      const int g = h / (d.nheads / d.ngroups);
      const double raw = proj[t * W + d.d_inner + CD + h] + m.dt_bias[h];
      const double dt = raw > 20 ? raw : std::log1p(std::exp(raw));
      const double A = -std::exp(double(m.A_log[h]));
      for (int p = 0; p < P; ++p) {
        const double xv = xbc[t * CD + h * P + p];
        double acc = 0;
        for (int n = 0; n < N; ++n) {
          double& s = S[(h * P + p) * N + n];
          s = std::exp(dt * A) * s + dt * xv * xbc[t * CD + d.d_inner + g * N + n];
          acc += s * xbc[t * CD + d.d_inner + d.ngroups * N + g * N + n];
        }
        y[t * d.d_inner + h * P + p] = acc + m.D[h] * xv;
      }
    }
  std::vector<double> out(static_cast<size_t>(T) * d.d_model);
  for (int t = 0; t < T; ++t) {
    std::vector<double> gte(d.d_inner);
    for (int i = 0; i < d.d_inner; ++i) gte[i] = y[t * d.d_inner + i] * silu(proj[t * W + i]);
    for (int g0 = 0; g0 < d.d_inner; g0 += d.norm_group_size) {
      double ss = 0;
      for (int i = g0; i < g0 + d.norm_group_size; ++i) ss += gte[i] * gte[i];
      const double inv = 1 / std::sqrt(ss / d.norm_group_size + d.norm_eps);
      for (int i = g0; i < g0 + d.norm_group_size; ++i) gte[i] *= inv * m.norm[i];
    }
    for (int o = 0; o < d.d_model; ++o) {
      double s = 0;
      for (int i = 0; i < d.d_inner; ++i) s += double(m.out_proj[o * d.d_inner + i]) * gte[i];
      out[t * d.d_model + o] = s;
    }
  }
  return out;
}

class MixerTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(MixerTest, BothScanFormsMatchThePlainDefinition) {
  const auto [ngroups, T] = GetParam();
  RandomMixer m(ngroups, 16, 7u + T);
  const auto x = random_rows(T, m.d.d_model, 99u + T);
  const auto ref = reference_mixer(m, x, T);
  for (ScanForm form : {ScanForm::kChunked, ScanForm::kRecurrent}) {
    MixerState st;
    st.init(m.d);
    std::vector<float> out(static_cast<size_t>(T) * m.d.d_model, NAN);
    mixer_forward(m.d, m.w, x.data(), T, &st, out.data(), form);
    const double err = rel_error(out, ref);
    // fp32 arithmetic against double: far under 1e-5 in practice.
    EXPECT_LT(err, 2e-6) << "form " << int(form) << " T " << T;
  }
}

TEST_P(MixerTest, ContinuingFromTheStateEqualsOnePass) {
  const auto [ngroups, T] = GetParam();
  RandomMixer m(ngroups, 16, 11u + T);
  const auto x = random_rows(T, m.d.d_model, 5u + T);
  const auto ref = reference_mixer(m, x, T);
  // A prefix through the chunked form, then the rest one token at a time: exactly how a prompt and
  // the decoded tokens after it run.
  const int split = T / 2 + (T > 1 ? 1 : 0);
  MixerState st;
  st.init(m.d);
  std::vector<float> out(static_cast<size_t>(T) * m.d.d_model, NAN);
  const int D = m.d.d_model;
  mixer_forward(m.d, m.w, x.data(), split, &st, out.data(), ScanForm::kChunked);
  for (int t = split; t < T; ++t) {
    mixer_forward(m.d, m.w, x.data() + t * D, 1, &st, out.data() + t * D, ScanForm::kChunked);
  }
  EXPECT_LT(rel_error(out, ref), 2e-6);
}

// Lengths around the chunk size 16: 1, chunk-1, chunk, chunk+1, several chunks and a ragged tail.
INSTANTIATE_TEST_SUITE_P(Lengths, MixerTest,
                         ::testing::Combine(::testing::Values(1, 2, 3),
                                            ::testing::Values(1, 2, 15, 16, 17, 48, 70)));

TEST(Mamba2Scan, ChunkedEqualsRecurrentFromANonZeroState) {
  RandomMixer m(2, 16, 3);
  const Mamba2Dims& d = m.d;
  for (int T : {1, 15, 16, 17, 33, 64, 100}) {
    const auto xbc = random_rows(T, d.conv_dim(), 1u + T);
    std::vector<float> dt(static_cast<size_t>(T) * d.nheads);
    std::mt19937 rng(T);
    std::uniform_real_distribution<float> u(0.001f, 0.3f);
    for (auto& v : dt) v = u(rng);
    const auto s0 = random_rows(1, d.nheads * d.headdim * d.d_state, 77);
    const ScanInputs in{xbc.data(),
                        d.conv_dim(),
                        xbc.data() + d.d_inner,
                        xbc.data() + d.d_inner + d.ngroups * d.d_state,
                        d.conv_dim(),
                        dt.data(),
                        d.nheads};
    std::vector<float> s_chunk = s0, s_rec = s0;
    std::vector<float> y_chunk(static_cast<size_t>(T) * d.d_inner, NAN), y_rec(y_chunk.size(), NAN);
    ssd_scan(d, m.w.scan, in, T, s_chunk.data(), y_chunk.data(), ScanForm::kChunked);
    ssd_scan(d, m.w.scan, in, T, s_rec.data(), y_rec.data(), ScanForm::kRecurrent);
    const std::vector<double> yr(y_rec.begin(), y_rec.end()), sr(s_rec.begin(), s_rec.end());
    EXPECT_LT(rel_error(y_chunk, yr), 1e-5) << "T " << T;
    EXPECT_LT(rel_error(s_chunk, sr), 1e-5) << "T " << T;
  }
}

TEST(Mamba2Conv, HistoryShorterThanTheKernelCarriesOver) {
  RandomMixer m(1, 16, 5);
  const Mamba2Dims& d = m.d;
  const int T = 7, CD = d.conv_dim();
  const auto xbc = random_rows(T, CD, 8);
  std::vector<float> hist_a(static_cast<size_t>(d.d_conv - 1) * CD, 0.0f), hist_b = hist_a;
  std::vector<float> whole(static_cast<size_t>(T) * CD), pieces(whole.size());
  conv1d_silu(d, m.w.scan, xbc.data(), CD, T, hist_a.data(), whole.data());
  // Pieces of 1, 2 and 4 rows: shorter, equal and longer than the history of 3.
  int t = 0;
  for (int len : {1, 2, 4}) {
    conv1d_silu(d, m.w.scan, xbc.data() + t * CD, CD, len, hist_b.data(), pieces.data() + t * CD);
    t += len;
  }
  for (size_t i = 0; i < whole.size(); ++i) ASSERT_FLOAT_EQ(whole[i], pieces[i]) << i;
  for (size_t i = 0; i < hist_a.size(); ++i) ASSERT_FLOAT_EQ(hist_a[i], hist_b[i]) << i;
}

}  // namespace
}  // namespace mlmamba
