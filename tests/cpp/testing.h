// A minimal test harness for the C++ test programs (no third-party framework: the same programs
// are cross-compiled for aarch64 and run under qemu). Each test file defines TEST(name) blocks;
// the program exits non-zero if any check failed and prints "N passed, N failed".
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace testing {

struct Case {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}
inline int& failures() {
  static int f = 0;
  return f;
}
struct Register {
  Register(const char* n, std::function<void()> f) { registry().push_back({n, std::move(f)}); }
};

inline int run_all(int argc, char** argv) {
  int passed = 0, failed = 0;
  const char* filter = argc > 1 ? argv[1] : nullptr;
  for (auto& c : registry()) {
    if (filter && std::string(c.name).find(filter) == std::string::npos) continue;
    int before = failures();
    try {
      c.fn();
    } catch (const std::exception& e) {
      std::printf("  exception: %s\n", e.what());
      ++failures();
    }
    bool ok = failures() == before;
    std::printf("[%s] %s\n", ok ? " OK " : "FAIL", c.name);
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

}  // namespace testing

#define TEST_CAT2(a, b) a##b
#define TEST_CAT(a, b) TEST_CAT2(a, b)
#define TEST(name)                                                              \
  static void test_##name();                                                    \
  static testing::Register TEST_CAT(reg_, name)(#name, test_##name);            \
  static void test_##name()

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);    \
      ++testing::failures();                                                    \
    }                                                                           \
  } while (0)

#define CHECK_MSG(cond, ...)                                                    \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::printf("  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);    \
      std::printf(__VA_ARGS__);                                                 \
      std::printf("\n");                                                        \
      ++testing::failures();                                                    \
    }                                                                           \
  } while (0)

#define CHECK_THROWS(expr)                                                      \
  do {                                                                          \
    bool thrown_ = false;                                                       \
    try {                                                                       \
      expr;                                                                     \
    } catch (const std::exception&) {                                           \
      thrown_ = true;                                                           \
    }                                                                           \
    if (!thrown_) {                                                             \
      std::printf("  %s:%d: %s did not throw\n", __FILE__, __LINE__, #expr);    \
      ++testing::failures();                                                    \
    }                                                                           \
  } while (0)

#define TEST_MAIN() \
  int main(int argc, char** argv) { return testing::run_all(argc, argv); }
