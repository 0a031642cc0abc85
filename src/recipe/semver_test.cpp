#include "canopy/recipe/semver.hpp"

#include <gtest/gtest.h>

namespace canopy::recipe {
namespace {

Version v(std::string_view text) {
  auto r = parse_version(text);
  EXPECT_TRUE(r) << text << ": " << (r ? "" : r.error().message);
  return r ? *r : Version{};
}

TEST(Semver, ParsesEveryPart) {
  auto r = parse_version("1.22.333-rc.1.x-y+build.7");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->major, 1u);
  EXPECT_EQ(r->minor, 22u);
  EXPECT_EQ(r->patch, 333u);
  EXPECT_EQ(r->prerelease, (std::vector<std::string>{"rc", "1", "x-y"}));
  EXPECT_EQ(r->build, "build.7");
  EXPECT_EQ(r->to_string(), "1.22.333-rc.1.x-y+build.7");
  EXPECT_EQ(v("0.0.0").to_string(), "0.0.0");
  EXPECT_EQ(v("999999.999999.999999").major, 999999u);
}

struct BadVersion {
  const char* text;
  const char* message;
};

class SemverBad : public ::testing::TestWithParam<BadVersion> {};

TEST_P(SemverBad, IsRejectedWithTheTextAndTheReason) {
  auto r = parse_version(GetParam().text);
  ASSERT_FALSE(r) << GetParam().text;
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(r.error().message, GetParam().message);
}

INSTANTIATE_TEST_SUITE_P(
    Table, SemverBad,
    ::testing::Values(
        BadVersion{"", "version \"\" is not valid: expected MAJOR.MINOR.PATCH"},
        BadVersion{"1.2", "version \"1.2\" is not valid: expected MAJOR.MINOR.PATCH"},
        BadVersion{"1.2.3.4", "version \"1.2.3.4\" is not valid: expected MAJOR.MINOR.PATCH"},
        BadVersion{"1.a.3", "version \"1.a.3\" is not valid: expected MAJOR.MINOR.PATCH with decimal numbers"},
        BadVersion{"01.2.3", "version \"01.2.3\" is not valid: the number \"01\" has a leading zero"},
        BadVersion{"1000000.0.0", "version \"1000000.0.0\" is not valid: the number 1000000 is larger than 999999"},
        BadVersion{"1.2.3-", "version \"1.2.3-\" is not valid: empty pre-release identifier"},
        BadVersion{"1.2.3-a..b", "version \"1.2.3-a..b\" is not valid: empty pre-release identifier"},
        BadVersion{"1.2.3-01", "version \"1.2.3-01\" is not valid: the pre-release number \"01\" has a leading zero"},
        BadVersion{"1.2.3-r_c", "version \"1.2.3-r_c\" is not valid: invalid character '_' in pre-release"},
        BadVersion{"1.2.3+", "version \"1.2.3+\" is not valid: empty build metadata identifier"},
        BadVersion{"1.2.3+a b", "version \"1.2.3+a b\" is not valid: invalid character ' ' in build metadata"},
        BadVersion{"v1.2.3", "version \"v1.2.3\" is not valid: expected MAJOR.MINOR.PATCH with decimal numbers"},
        BadVersion{"1.0.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                   "version \"1.0.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is not valid: "
                   "longer than 64 characters"}));

TEST(Semver, OrdersByPrecedence) {
  // semver.org §11 example chain.
  const char* chain[] = {"1.0.0-alpha",      "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
                         "1.0.0-beta.2",     "1.0.0-beta.11", "1.0.0-rc.1",       "1.0.0",
                         "1.0.1",            "1.1.0",         "2.0.0",            "10.0.0"};
  for (std::size_t i = 0; i + 1 < std::size(chain); ++i) {
    EXPECT_LT(v(chain[i]), v(chain[i + 1])) << chain[i] << " < " << chain[i + 1];
    EXPECT_GT(v(chain[i + 1]), v(chain[i]));
  }
  EXPECT_EQ(v("1.0.0+a"), v("1.0.0+b"));
  EXPECT_TRUE(v("1.0.0-2") < v("1.0.0-10"));
}

struct RangeCase {
  const char* range;
  const char* version;
  bool satisfied;
};

class RangeTable : public ::testing::TestWithParam<RangeCase> {};

TEST_P(RangeTable, Satisfies) {
  auto r = VersionRange::parse(GetParam().range);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->satisfies(v(GetParam().version)), GetParam().satisfied)
      << GetParam().range << " vs " << GetParam().version;
  EXPECT_EQ(r->text(), GetParam().range);
}

INSTANTIATE_TEST_SUITE_P(
    Table, RangeTable,
    ::testing::Values(
        RangeCase{"*", "0.0.0", true}, RangeCase{"*", "5.4.3", true}, RangeCase{"", "1.0.0", true},
        RangeCase{"*", "1.0.0-rc.1", false},  // npm: pre-releases only when named
        RangeCase{"1.0.0", "1.0.0", true}, RangeCase{"1.0.0", "1.0.1", false}, RangeCase{"=1.0.0", "1.0.0", true},
        RangeCase{"=1.0.0", "1.0.0+build", true},
        RangeCase{">=1.0.0 <2.0.0", "1.0.0", true}, RangeCase{">=1.0.0 <2.0.0", "1.9.9", true},
        RangeCase{">=1.0.0 <2.0.0", "2.0.0", false}, RangeCase{">=1.0.0 <2.0.0", "0.9.9", false},
        RangeCase{">= 1.0.0 < 2.0.0", "1.5.0", true}, RangeCase{">1.0.0", "1.0.0", false},
        RangeCase{">1.0.0", "1.0.1", true}, RangeCase{"<=1.2.3", "1.2.3", true}, RangeCase{"<=1.2.3", "1.2.4", false},
        RangeCase{">1.2", "1.2.9", false}, RangeCase{">1.2", "1.3.0", true}, RangeCase{"<1.2", "1.1.9", true},
        RangeCase{"<1.2", "1.2.0", false}, RangeCase{"<=1.2", "1.2.9", true}, RangeCase{"<=1.2", "1.3.0", false},
        RangeCase{">=1.2", "1.2.0", true}, RangeCase{">=1", "0.9.0", false},
        RangeCase{"^1.2.3", "1.2.3", true}, RangeCase{"^1.2.3", "1.9.0", true}, RangeCase{"^1.2.3", "2.0.0", false},
        RangeCase{"^1.2.3", "1.2.2", false}, RangeCase{"^0.2.3", "0.2.9", true}, RangeCase{"^0.2.3", "0.3.0", false},
        RangeCase{"^0.0.3", "0.0.3", true}, RangeCase{"^0.0.3", "0.0.4", false}, RangeCase{"^0.0", "0.0.9", true},
        RangeCase{"^0.0", "0.1.0", false}, RangeCase{"^1.x", "1.9.9", true}, RangeCase{"^0.x", "0.9.0", true},
        RangeCase{"^0.x", "1.0.0", false},
        RangeCase{"~1.2.3", "1.2.9", true}, RangeCase{"~1.2.3", "1.3.0", false}, RangeCase{"~1.2", "1.2.0", true},
        RangeCase{"~1.2", "1.3.0", false}, RangeCase{"~1", "1.9.0", true}, RangeCase{"~1", "2.0.0", false},
        RangeCase{"1.x", "1.0.0", true}, RangeCase{"1.x", "1.99.0", true}, RangeCase{"1.x", "2.0.0", false},
        RangeCase{"1.2.*", "1.2.7", true}, RangeCase{"1.2.X", "1.3.0", false}, RangeCase{"1", "1.4.0", true},
        RangeCase{"1.2", "1.2.4", true},
        RangeCase{"1.0.0 || 2.x", "2.5.0", true}, RangeCase{"1.0.0 || 2.x", "1.5.0", false},
        RangeCase{"<1.0.0 || >=3.0.0", "3.0.0", true},
        RangeCase{"1.2.3 - 2.3.4", "1.2.3", true}, RangeCase{"1.2.3 - 2.3.4", "2.3.4", true},
        RangeCase{"1.2.3 - 2.3.4", "2.3.5", false}, RangeCase{"1.2 - 2.3", "2.3.9", true},
        RangeCase{"1.2 - 2.3", "2.4.0", false}, RangeCase{"1.2 - 2", "2.9.9", true}, RangeCase{"1.2 - 2", "1.1.9", false},
        RangeCase{">=1.0.0-rc.1 <2.0.0", "1.0.0-rc.2", true}, RangeCase{">=1.0.0-rc.1 <2.0.0", "1.1.0-rc.2", false},
        RangeCase{"^1.0.0-beta", "1.0.0", true}, RangeCase{"^1.0.0-beta", "1.0.0-alpha", false},
        RangeCase{"1.x", "2.0.0-rc.1", false}, RangeCase{">1", "2.0.0", true}, RangeCase{"<*", "0.0.0", false}));

TEST(VersionRange, DefaultIsStar) {
  VersionRange r;
  EXPECT_EQ(r.text(), "*");
  EXPECT_TRUE(r.satisfies(v("3.2.1")));
  EXPECT_TRUE(satisfies(v("0.0.1"), r));
}

struct BadRange {
  const char* text;
  const char* message;
};

class RangeBad : public ::testing::TestWithParam<BadRange> {};

TEST_P(RangeBad, IsRejectedWithTheTextAndTheReason) {
  auto r = VersionRange::parse(GetParam().text);
  ASSERT_FALSE(r) << GetParam().text;
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(r.error().message, GetParam().message);
}

INSTANTIATE_TEST_SUITE_P(
    Table, RangeBad,
    ::testing::Values(
        BadRange{">=1.0.0 <", "version range \">=1.0.0 <\" is not valid: \"<\" is missing a version"},
        BadRange{"=>1.0.0", "version range \"=>1.0.0\" is not valid: unknown operator \"=>\""},
        BadRange{"1.0.0 !", "version range \"1.0.0 !\" is not valid: \"!\": expected MAJOR.MINOR.PATCH with decimal numbers"},
        BadRange{"1.x.3", "version range \"1.x.3\" is not valid: \"1.x.3\": \"3\" follows a wildcard"},
        BadRange{"1.2.3.4", "version range \"1.2.3.4\" is not valid: \"1.2.3.4\": expected at most MAJOR.MINOR.PATCH"},
        BadRange{"^01.0.0", "version range \"^01.0.0\" is not valid: \"^01.0.0\": the number \"01\" has a leading zero"},
        BadRange{"1.2-rc", "version range \"1.2-rc\" is not valid: \"1.2-rc\": a pre-release needs MAJOR.MINOR.PATCH"},
        BadRange{"1.0.0 - x.y", "version range \"1.0.0 - x.y\" is not valid: \"x.y\": \"y\" follows a wildcard"},
        BadRange{"2000000.0.0",
                 "version range \"2000000.0.0\" is not valid: \"2000000.0.0\": the number 2000000 is larger than "
                 "999999"}));

}  // namespace
}  // namespace canopy::recipe
