#include "queue/maildir/maildir.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "core/io/posix_io.h"

namespace relais::maildir {
namespace {

namespace fs = std::filesystem;

class MaildirTest : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/relais-maildir-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string root_;
  io::PosixIo io_;
};

TEST_F(MaildirTest, DeliversIntoNewWithHeadersAndLfEndings) {
  const Delivery d{root_ + "/example.com/bob", "alice@sender.example", "bob@example.com",
                   UniqueName(1764000000123456, 42, 7, "mx.example")};
  const Result r = Deliver(io_, d, "Received: x\r\nSubject: hi\r\n\r\nbody\r\n");
  ASSERT_EQ(r.status, Status::kDelivered) << r.reply;
  EXPECT_EQ(r.path, root_ + "/example.com/bob/new/1764000000.M123456P42Q7.mx.example");
  EXPECT_EQ(Read(r.path),
            "Return-Path: <alice@sender.example>\nDelivered-To: bob@example.com\n"
            "Received: x\nSubject: hi\n\nbody\n");
  EXPECT_TRUE(fs::is_directory(root_ + "/example.com/bob/cur"));
  EXPECT_TRUE(fs::is_empty(root_ + "/example.com/bob/tmp"));
  EXPECT_EQ(fs::status(root_ + "/example.com/bob").permissions() & fs::perms::all,
            fs::perms::owner_all);
  EXPECT_EQ(fs::status(r.path).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

TEST_F(MaildirTest, NullSenderAndBareCrSurvive) {
  const Delivery d{root_ + "/m", "", "postmaster@example.com", "1.M1P1Q1.h"};
  const Result r = Deliver(io_, d, "a\rb\r\n");
  ASSERT_EQ(r.status, Status::kDelivered);
  EXPECT_EQ(Read(r.path), "Return-Path: <>\nDelivered-To: postmaster@example.com\na\rb\n");
}

TEST_F(MaildirTest, SameNameTwiceIsRefusedNotOverwritten) {
  const Delivery d{root_ + "/m", "a@b", "c@d", "1.M1P1Q1.h"};
  ASSERT_EQ(Deliver(io_, d, "first\r\n").status, Status::kDelivered);
  // A leftover tmp/ file of the same name (a crash mid-delivery) must not be clobbered.
  std::ofstream(root_ + "/m/tmp/1.M1P1Q1.h") << "partial";
  EXPECT_EQ(Deliver(io_, d, "second\r\n").status, Status::kTemporary);
  EXPECT_EQ(Read(root_ + "/m/new/1.M1P1Q1.h"), "Return-Path: <a@b>\nDelivered-To: c@d\nfirst\n");
}

TEST_F(MaildirTest, UnwritableRootIsTemporary) {
  std::ofstream(root_ + "/file") << "not a directory";
  const Result r = Deliver(io_, Delivery{root_ + "/file/bob", "a@b", "c@d", "1.M1P1Q1.h"}, "x\r\n");
  EXPECT_EQ(r.status, Status::kTemporary);
  EXPECT_EQ(r.reply.substr(0, 9), "451 4.3.0");
}

TEST_F(MaildirTest, UniqueNamesEscapeTheHost) {
  EXPECT_EQ(UniqueName(2'000'001, 5, 9, "a/b:c"), "2.M1P5Q9.a\\057b\\072c");
}

}  // namespace
}  // namespace relais::maildir
