// A small command-line reader: `--name value`, `--name=value` and bare `--flag`. Unknown options
// are errors, so a typo in a script fails loudly instead of being ignored.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "mlmamba/result.h"

namespace mlmamba::cli {

class Options {
 public:
  // `valued` take an argument, `flags` do not.
  static Result<Options> parse(const std::vector<std::string>& args,
                               const std::set<std::string>& valued,
                               const std::set<std::string>& flags);

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string str(const std::string& name, const std::string& fallback = {}) const;
  Result<int> integer(const std::string& name, int fallback, int lo, int hi) const;
  Result<double> number(const std::string& name, double fallback, double lo, double hi) const;
  Result<uint64_t> u64(const std::string& name, uint64_t fallback) const;

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace mlmamba::cli
