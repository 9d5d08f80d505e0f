#include "options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace mlmamba::cli {

Result<Options> Options::parse(const std::vector<std::string>& args,
                               const std::set<std::string>& valued,
                               const std::set<std::string>& flags) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      return make_error(ErrorCode::kInvalidArgument, "unexpected argument \"" + a + "\"");
    }
    std::string name = a.substr(2), value;
    const auto eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (flags.count(name)) {
      if (inline_value)
        return make_error(ErrorCode::kInvalidArgument, "--" + name + " takes no value");
      o.values_[name] = "1";
    } else if (valued.count(name)) {
      if (!inline_value) {
        if (i + 1 >= args.size())
          return make_error(ErrorCode::kInvalidArgument, "--" + name + " needs a value");
        value = args[++i];
      }
      o.values_[name] = value;
    } else {
      return make_error(ErrorCode::kInvalidArgument, "unknown option --" + name);
    }
  }
  return o;
}

std::string Options::str(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

Result<int> Options::integer(const std::string& name, int fallback, int lo, int hi) const {
  if (!has(name)) return fallback;
  const std::string s = str(name);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE || v < lo || v > hi) {
    return make_error(ErrorCode::kInvalidArgument, "--" + name + " must be an integer in " +
                                                       std::to_string(lo) + ".." +
                                                       std::to_string(hi) + " (got \"" + s + "\")");
  }
  return static_cast<int>(v);
}

Result<double> Options::number(const std::string& name, double fallback, double lo,
                               double hi) const {
  if (!has(name)) return fallback;
  const std::string s = str(name);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--" + name + " must be a number in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "] (got \"" + s + "\")");
  }
  return v;
}

Result<uint64_t> Options::u64(const std::string& name, uint64_t fallback) const {
  if (!has(name)) return fallback;
  const std::string s = str(name);
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE) {
    return make_error(ErrorCode::kInvalidArgument, "--" + name + " must be a non-negative integer");
  }
  return static_cast<uint64_t>(v);
}

}  // namespace mlmamba::cli
