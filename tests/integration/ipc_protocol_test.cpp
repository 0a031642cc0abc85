#include <gtest/gtest.h>
TEST(IpcProtocol, Placeholder) {}
