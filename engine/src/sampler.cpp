#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mlmamba {

Result<void> validate(const Sampling& s) {
  if (!(s.temperature >= 0) || !std::isfinite(s.temperature)) {
    return make_error(ErrorCode::kInvalidArgument, "temperature must be >= 0");
  }
  if (s.top_k < 0) return make_error(ErrorCode::kInvalidArgument, "top-k must be >= 0");
  if (!(s.top_p > 0 && s.top_p <= 1)) {
    return make_error(ErrorCode::kInvalidArgument, "top-p must be in (0, 1]");
  }
  if (!(s.repetition_penalty > 0) || !std::isfinite(s.repetition_penalty)) {
    return make_error(ErrorCode::kInvalidArgument, "repetition penalty must be > 0");
  }
  return {};
}

int32_t Sampler::next(std::vector<float>& logits, const std::vector<int32_t>& history) {
  const int V = static_cast<int>(logits.size());
  if (p_.repetition_penalty != 1.0f) {
    // Each distinct earlier token is penalised once, however often it occurred.
    std::vector<int32_t> seen(history);
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= V) continue;
      float& l = logits[id];
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    }
  }
  if (p_.temperature == 0.0f) {
    // Ties go to the lowest id, as torch.argmax does.
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  for (float& l : logits) l /= p_.temperature;

  order_.resize(V);
  std::iota(order_.begin(), order_.end(), 0);
  int keep = V;
  if (p_.top_k > 0 && p_.top_k < V) keep = p_.top_k;
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (keep < V || p_.top_p < 1.0f) {
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
  }
  order_.resize(keep);
  float top = -INFINITY;
  for (int32_t id : order_) top = std::max(top, logits[id]);
  probs_.resize(keep);
  double total = 0;
  for (int i = 0; i < keep; ++i) {
    probs_[i] = std::exp(logits[order_[i]] - top);
    total += probs_[i];
  }
  if (p_.top_p < 1.0f) {
    // Smallest prefix of the sorted tokens whose probability reaches top_p; at least one token.
    double cum = 0;
    int n = 0;
    while (n < keep) {
      cum += probs_[n] / total;
      ++n;
      if (cum >= p_.top_p) break;
    }
    keep = n;
    total = 0;
    for (int i = 0; i < keep; ++i) total += probs_[i];
  }
  std::uniform_real_distribution<double> uni(0.0, total);
  const double r = uni(rng_);
  double cum = 0;
  for (int i = 0; i < keep; ++i) {
    cum += probs_[i];
    if (r < cum) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace mlmamba
