#include "canopy/core/error.hpp"

#include <gtest/gtest.h>

namespace canopy {
namespace {

result<int> half(int v) {
  if (v % 2) return make_error(errc::invalid, "odd number");
  return v / 2;
}

TEST(Result, HoldsValueOrError) {
  auto a = half(4);
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, 2);
  auto b = half(3);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, errc::invalid);
  EXPECT_EQ(b.error().message, "odd number");
}

TEST(Result, VoidResult) {
  result<void> good = ok();
  EXPECT_TRUE(good);
  result<void> bad = make_error(errc::timeout, "late");
  EXPECT_FALSE(bad);
  EXPECT_EQ(bad.error().message, "late");
}

TEST(Errc, ComposesWithErrorCode) {
  std::error_code ec = errc::timeout;
  EXPECT_EQ(ec, errc::timeout);
  EXPECT_EQ(ec.category().name(), std::string("canopy"));
  EXPECT_EQ(ec.message(), "timed out");
}

TEST(Errc, ErrnoErrorNamesWhatAndWhy) {
  auto e = errno_error("cannot open /x", ENOENT);
  EXPECT_EQ(e.code, errc::io);
  EXPECT_EQ(e.message, "cannot open /x: No such file or directory");
}

}  // namespace
}  // namespace canopy
