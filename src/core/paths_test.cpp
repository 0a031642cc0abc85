#include "canopy/core/paths.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include "support/process.hpp"

namespace canopy {
namespace {
namespace fs = std::filesystem;

TEST(RootLayout, CreatesEveryFolderWithItsMode) {
  test::TempDir dir;
  RootLayout l{dir.path() / "root"};
  ASSERT_TRUE(create_root_layout(l));
  EXPECT_EQ(fs::status(l.config_dir()).permissions(), fs::perms::owner_all);
  EXPECT_EQ(fs::status(l.spool_dir()).permissions(), fs::perms::owner_all);
  EXPECT_EQ(fs::status(l.deployments_dir()).permissions(), fs::perms::owner_all);
  EXPECT_EQ(fs::status(l.logs_dir()).permissions(),
            fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec);
  EXPECT_TRUE(fs::is_directory(l.recipes_dir()));
  EXPECT_TRUE(fs::is_directory(l.unarchived_dir()));
  // Wrong modes on an existing root are corrected.
  fs::permissions(l.spool_dir(), fs::perms::all);
  ASSERT_TRUE(create_root_layout(l));
  EXPECT_EQ(fs::status(l.spool_dir()).permissions(), fs::perms::owner_all);
}

TEST(RootLayout, FailureNamesThePath) {
  test::TempDir dir;
  test::write_file(dir.path() / "file", "x");
  auto r = create_root_layout(RootLayout{dir.path() / "file" / "root"});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find((dir.path() / "file").string()), std::string::npos);
}

TEST(RootLock, SecondLockOnTheSameRootIsRefusedWithTheHolderPid) {
  test::TempDir dir;
  RootLayout l{dir.path()};
  auto first = RootLock::acquire(l);
  ASSERT_TRUE(first) << first.error().message;
  auto second = RootLock::acquire(l);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::conflict);
  EXPECT_NE(second.error().message.find("in use by canopyd (pid " + std::to_string(::getpid()) + ")"),
            std::string::npos)
      << second.error().message;
}

TEST(RootLock, ReleasedOnDestruction) {
  test::TempDir dir;
  RootLayout l{dir.path()};
  { auto first = RootLock::acquire(l); ASSERT_TRUE(first); }
  EXPECT_TRUE(RootLock::acquire(l));
}

}  // namespace
}  // namespace canopy
