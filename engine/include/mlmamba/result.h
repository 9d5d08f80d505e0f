// Errors are values: every fallible engine call returns Result<T>, never throws across the API and
// never aborts the process.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace mlmamba {

enum class ErrorCode {
  kInvalidArgument,  // the caller passed something unusable (bad flag value, empty prompt, ...)
  kNotFound,         // a file, folder or tensor that must exist does not
  kCorruptFile,      // a file exists but its contents are malformed or lie about themselves
  kUnsupported,      // well-formed input the engine does not handle (dtype, model type, ...)
  kLimitExceeded,    // input larger than the configured limits (prompt length, image size, ...)
  kOutOfMemory,
  kBackend,  // the compute backend failed or is unavailable
  kCancelled,
  kIo,
};

const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code;
  std::string message;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit on purpose, like std::expected
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{ErrorCode::kInvalidArgument, {}};
  bool ok_ = true;
};

inline Error make_error(ErrorCode code, std::string message) {
  return Error{code, std::move(message)};
}

}  // namespace mlmamba

// Propagates an error from an expression of type Result<...>; used inside functions returning
// Result.
#define MLM_TRY(expr)                                \
  do {                                               \
    auto&& mlm_try_r_ = (expr);                      \
    if (!mlm_try_r_.ok()) return mlm_try_r_.error(); \
  } while (0)

#define MLM_CONCAT_INNER_(a, b) a##b
#define MLM_CONCAT_(a, b) MLM_CONCAT_INNER_(a, b)
#define MLM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.error();               \
  lhs = std::move(tmp).value()
// `MLM_ASSIGN_OR_RETURN(auto x, f());` binds the value or returns the error.
#define MLM_ASSIGN_OR_RETURN(lhs, expr) \
  MLM_ASSIGN_OR_RETURN_IMPL_(MLM_CONCAT_(mlm_r_, __LINE__), lhs, expr)
