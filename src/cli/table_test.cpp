// [cli] table and key/value rendering.
#include "table.hpp"

#include <string>

#include <gtest/gtest.h>

namespace canopy::cli {
namespace {

TEST(Table, AlignsColumnsWithoutTrailingSpaces) {
  Table t({"NAME", "VERSION", "STATE"});
  t.add_row({"com.example.Hello", "1.0.0", "RUNNING"});
  t.add_row({"a", "10.20.30", "BROKEN"});
  EXPECT_EQ(t.render(),
            "NAME               VERSION   STATE\n"
            "com.example.Hello  1.0.0     RUNNING\n"
            "a                  10.20.30  BROKEN\n");
}

TEST(Table, OptionalColumnIsDroppedOnlyWhenEveryCellIsEmpty) {
  Table empty({"NAME", "STATE", "REASON"});
  empty.add_row({"a", "RUNNING", ""});
  empty.drop_empty_column("REASON");
  EXPECT_EQ(empty.render(), "NAME  STATE\na     RUNNING\n");

  Table some({"NAME", "STATE", "REASON"});
  some.add_row({"a", "RUNNING"});
  some.add_row({"b", "BROKEN", "exited with code 3"});
  some.drop_empty_column("REASON");
  EXPECT_EQ(some.render(),
            "NAME  STATE    REASON\n"
            "a     RUNNING\n"
            "b     BROKEN   exited with code 3\n");
}

TEST(Table, MultibyteTextIsMeasuredInCharactersAndControlCharactersAreNeutralised) {
  Table t({"N", "X"});
  t.add_row({"\xC3\xA9t\xC3\xA9", "1"});  // "été": 3 characters, 5 bytes
  t.add_row({"evil\n\x1b[2J", "2"});
  EXPECT_EQ(t.render(),
            "N" + std::string(10, ' ') + "X\n" +
                "\xC3\xA9t\xC3\xA9" + std::string(8, ' ') + "1\n" +
                "evil??[2J  2\n");
}

TEST(Table, HeaderOnlyWhenThereAreNoRows) {
  Table t({"ID", "STATUS"});
  EXPECT_EQ(t.rows(), 0u);
  EXPECT_EQ(t.render(), "ID  STATUS\n");
}

TEST(KeyValues, AlignsValuesSkipsEmptyOnesAndContinuesMultilineValues) {
  EXPECT_EQ(render_key_values({{"Name", "com.x"}, {"Reason", ""}, {"Failure causes", "one\ntwo"}}),
            "Name            com.x\n"
            "Failure causes  one\n"
            "                two\n");
}

}  // namespace
}  // namespace canopy::cli
