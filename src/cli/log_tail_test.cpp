// [cli] canopy logs: last N lines, following across rotation and truncation, log names.
#include "log_tail.hpp"

#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/process.hpp"

namespace canopy::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

void append(const fs::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::app | std::ios::binary);
  out << text;
}

std::string numbered_lines(int from, int to) {
  std::string text;
  for (int i = from; i <= to; ++i) text += "line " + std::to_string(i) + "\n";
  return text;
}

TEST(LogTail, LastNLines) {
  canopy::test::TempDir dir;
  const auto file = dir.path() / "a.log";
  canopy::test::write_file(file, numbered_lines(1, 100));
  auto log = LogFollower::open(file);
  ASSERT_TRUE(log) << log.error().message;
  EXPECT_EQ(*log->tail(3), "line 98\nline 99\nline 100\n");
  EXPECT_EQ(*log->tail(0), "");
  EXPECT_EQ(*log->tail(100), numbered_lines(1, 100));
  EXPECT_EQ(*log->tail(1000), numbered_lines(1, 100));
}

TEST(LogTail, ALastLineWithoutNewlineCountsAndEmptyFilesAreFine) {
  canopy::test::TempDir dir;
  canopy::test::write_file(dir.path() / "a.log", "one\ntwo\nthree");
  auto log = LogFollower::open(dir.path() / "a.log");
  EXPECT_EQ(*log->tail(2), "two\nthree");
  canopy::test::write_file(dir.path() / "empty.log", "");
  auto empty = LogFollower::open(dir.path() / "empty.log");
  EXPECT_EQ(*empty->tail(5), "");
  canopy::test::write_file(dir.path() / "blank.log", "\n\n\n");
  auto blank = LogFollower::open(dir.path() / "blank.log");
  EXPECT_EQ(*blank->tail(2), "\n\n");
}

TEST(LogTail, LinesLongerThanTheReadBlockAndManyBlocks) {
  canopy::test::TempDir dir;
  const std::string long_line(200 * 1024, 'x');
  std::string text = numbered_lines(1, 20000) + long_line + "\nlast\n";
  canopy::test::write_file(dir.path() / "big.log", text);
  auto log = LogFollower::open(dir.path() / "big.log");
  EXPECT_EQ(*log->tail(2), long_line + "\nlast\n");
  EXPECT_EQ(*log->tail(3), "line 20000\n" + long_line + "\nlast\n");
}

TEST(LogTail, MissingFileIsNotFound) {
  canopy::test::TempDir dir;
  auto log = LogFollower::open(dir.path() / "none.log");
  ASSERT_FALSE(log);
  EXPECT_EQ(log.error().code, errc::not_found);
}

TEST(LogFollow, NewTextAfterTheTail) {
  canopy::test::TempDir dir;
  const auto file = dir.path() / "a.log";
  canopy::test::write_file(file, numbered_lines(1, 5));
  auto log = LogFollower::open(file);
  EXPECT_EQ(*log->tail(1), "line 5\n");
  EXPECT_EQ(*log->poll(), "");
  append(file, "line 6\nline 7 partial");
  EXPECT_EQ(*log->poll(), "line 6\nline 7 partial");
  append(file, " end\n");
  EXPECT_EQ(*log->poll(), " end\n");
  EXPECT_EQ(*log->poll(), "");
}

TEST(LogFollow, FollowsAcrossRotation) {
  canopy::test::TempDir dir;
  const auto file = dir.path() / "a.log";
  canopy::test::write_file(file, numbered_lines(1, 2));
  auto log = LogFollower::open(file);
  EXPECT_EQ(*log->tail(10), numbered_lines(1, 2));

  // The writer adds to the old file, renames it away, then starts a new one.
  append(file, "line 3\n");
  fs::rename(file, dir.path() / "a.log.1");
  append(dir.path() / "a.log.1", "line 4\n");
  std::string seen = *log->poll();
  EXPECT_EQ(seen, "line 3\nline 4\n");
  EXPECT_EQ(*log->poll(), "");  // the new file does not exist yet: wait for it
  canopy::test::write_file(file, "line 5\n");
  seen = *log->poll();
  EXPECT_EQ(seen, "line 5\n");
  append(file, "line 6\n");
  EXPECT_EQ(*log->poll(), "line 6\n");

  // A second rotation where the new file appears before the poll, with a late write to the old.
  fs::rename(file, dir.path() / "a.log.2");
  canopy::test::write_file(file, "line 8\n");
  append(dir.path() / "a.log.2", "line 7\n");
  std::string both;
  for (int i = 0; i < 3; ++i) both += *log->poll();
  EXPECT_EQ(both, "line 7\nline 8\n");
}

TEST(LogFollow, TruncationStartsOver) {
  canopy::test::TempDir dir;
  const auto file = dir.path() / "a.log";
  canopy::test::write_file(file, numbered_lines(1, 10));
  auto log = LogFollower::open(file);
  (void)log->tail(0);
  canopy::test::write_file(file, "fresh\n");  // truncates in place
  EXPECT_EQ(*log->poll(), "fresh\n");
}

TEST(LogFollow, LargeBacklogComesInBoundedPieces) {
  canopy::test::TempDir dir;
  const auto file = dir.path() / "a.log";
  canopy::test::write_file(file, "");
  auto log = LogFollower::open(file);
  (void)log->tail(0);
  append(file, std::string(2500, 'y'));
  EXPECT_EQ(log->poll(1000)->size(), 1000u);
  EXPECT_EQ(log->poll(1000)->size(), 1000u);
  EXPECT_EQ(log->poll(1000)->size(), 500u);
  EXPECT_EQ(*log->poll(1000), "");
}

TEST(LogNames, OnlyPlainNamesInsideTheLogsFolder) {
  EXPECT_TRUE(check_log_name("com.example.Hello"));
  EXPECT_TRUE(check_log_name("canopyd"));
  for (const char* bad : {"", "../etc/passwd", "a/b", "..", "a..b", "x\ny"}) {
    auto r = check_log_name(bad);
    EXPECT_FALSE(r) << bad;
  }
  EXPECT_THAT(check_log_name("a/b").error().message, HasSubstr("must not contain / or .."));
}

TEST(LogNames, ListingLeavesOutRotatedCopiesAndOtherFiles) {
  canopy::test::TempDir dir;
  for (const char* f : {"canopyd.log", "canopyd.1.log", "canopyd.2.log", "com.b.log", "com.a.log", "com.a.log.1",
                        "notes.txt", "com.v2.log"})
    canopy::test::write_file(dir.path() / f, "x\n");
  fs::create_directories(dir.path() / "dir.log");
  EXPECT_THAT(list_logs(dir.path()), ElementsAre("canopyd", "com.a", "com.b", "com.v2"));
  EXPECT_TRUE(list_logs(dir.path() / "missing").empty());
}

}  // namespace
}  // namespace canopy::cli
