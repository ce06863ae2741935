// core/base/check.h — always-on invariant checks for programmer errors.
//
// RELAIS_CHECK(cond) << "why" aborts with file, line and message when `cond` is false, in every
// build. RELAIS_DCHECK does the same in debug builds only. Never CHECK anything an outsider
// controls (bytes from a peer, DNS answers, disk contents, config values): those are returned
// as errors. Thread-safe; allocation happens only on the failure path.
#pragma once

#include <sstream>

namespace relais::base {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  template <typename T>
  CheckFailure& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  std::ostringstream stream_;
};

// Lets `RELAIS_CHECK(x) << ...` be a single expression of type void.
struct Voidify {
  void operator&(const CheckFailure&) {}
};

}  // namespace relais::base

#define RELAIS_CHECK(cond)        \
  (__builtin_expect(!!(cond), 1)) \
      ? (void)0                   \
      : ::relais::base::Voidify() & ::relais::base::CheckFailure(__FILE__, __LINE__, #cond)

#ifdef NDEBUG
#define RELAIS_DCHECK(cond) \
  while (false) RELAIS_CHECK(cond)
#else
#define RELAIS_DCHECK(cond) RELAIS_CHECK(cond)
#endif
