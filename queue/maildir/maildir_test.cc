#include "queue/maildir/maildir.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <vector>

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
  Deliverer deliverer_{io_};
};

TEST_F(MaildirTest, DeliversIntoNewWithHeadersAndLfEndings) {
  const Delivery d{root_ + "/example.com/bob", "alice@sender.example", "bob@example.com",
                   UniqueName(1764000000123456, 42, 7, "mx.example"), root_};
  const Result r = deliverer_.Deliver(d, "Received: x\r\nSubject: hi\r\n\r\nbody\r\n");
  ASSERT_EQ(r.status, Status::kDelivered) << r.detail;
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
  const Delivery d{root_ + "/m", "", "postmaster@example.com", "1.M1P1Q1.h", root_};
  const Result r = deliverer_.Deliver(d, "a\rb\r\n");
  ASSERT_EQ(r.status, Status::kDelivered);
  EXPECT_EQ(Read(r.path), "Return-Path: <>\nDelivered-To: postmaster@example.com\na\rb\n");
}

TEST_F(MaildirTest, SameNameTwiceIsRefusedNotOverwritten) {
  const Delivery d{root_ + "/m", "a@b", "c@d", "1.M1P1Q1.h", root_};
  ASSERT_EQ(deliverer_.Deliver(d, "first\r\n").status, Status::kDelivered);
  // A leftover tmp/ file of the same name (a crash mid-delivery) must not be clobbered.
  std::ofstream(root_ + "/m/tmp/1.M1P1Q1.h") << "partial";
  EXPECT_EQ(deliverer_.Deliver(d, "second\r\n").status, Status::kTemporary);
  EXPECT_EQ(Read(root_ + "/m/new/1.M1P1Q1.h"), "Return-Path: <a@b>\nDelivered-To: c@d\nfirst\n");
}

TEST_F(MaildirTest, UnwritableRootIsTemporary) {
  std::ofstream(root_ + "/file") << "not a directory";
  const Result r =
      deliverer_.Deliver(Delivery{root_ + "/file/bob", "a@b", "c@d", "1.M1P1Q1.h", root_}, "x\r\n");
  EXPECT_EQ(r.status, Status::kTemporary);
  EXPECT_EQ(r.problem, Problem::kFileSystem);  // 451 4.3.0 in queue/delivery's table.
  // The file-system path goes to the log, never to the sender.
  EXPECT_TRUE(r.detail.empty()) << r.detail;
  EXPECT_NE(r.error.find("file"), std::string::npos) << r.error;
}

TEST(MaildirRouteRoot, IsTheFixedDirectoryBeforeTheFirstPlaceholder) {
  EXPECT_EQ(RouteRoot("/srv/mail/{domain}/users/{local}"), "/srv/mail");
  EXPECT_EQ(RouteRoot("/srv/mail/u-{local}"), "/srv/mail");
  EXPECT_EQ(RouteRoot("var/mail"), "var/mail");
  EXPECT_EQ(RouteRoot("var/mail/"), "var/mail");
  EXPECT_EQ(RouteRoot("{domain}/{local}"), ".");
  EXPECT_EQ(RouteRoot("/{domain}/{local}"), "/");
  EXPECT_EQ(RouteRoot("/srv/{local}/{domain}"), "/srv");
}

TEST_F(MaildirTest, KnownMailboxRemovedBehindOurBackIsCreatedAgain) {
  const Delivery d{root_ + "/example.com/bob", "a@b", "bob@example.com", "1.M1P1Q1.h", root_};
  const Result first = deliverer_.Deliver(d, "one\r\n");
  ASSERT_EQ(first.status, Status::kDelivered) << first.detail;
  EXPECT_FALSE(first.recreated);
  fs::remove_all(root_ + "/example.com");
  Delivery again = d;
  again.unique_name = "2.M1P1Q1.h";
  const Result second = deliverer_.Deliver(again, "two\r\n");
  ASSERT_EQ(second.status, Status::kDelivered) << second.detail;
  EXPECT_TRUE(second.recreated);
  EXPECT_EQ(Read(second.path), "Return-Path: <a@b>\nDelivered-To: bob@example.com\ntwo\n");
  EXPECT_TRUE(fs::is_directory(root_ + "/example.com/bob/cur"));
  EXPECT_EQ(deliverer_.mailboxes_recreated(), 1u);
  // Steady state again: nothing made, nothing synced but new/ (counted by DurableDirs).
  const uint64_t made = deliverer_.directory_stats().made;
  const uint64_t synced = deliverer_.directory_stats().synced;
  again.unique_name = "3.M1P1Q1.h";
  ASSERT_EQ(deliverer_.Deliver(again, "three\r\n").status, Status::kDelivered);
  EXPECT_EQ(deliverer_.directory_stats().made, made);
  EXPECT_EQ(deliverer_.directory_stats().synced, synced);
}

// Issue: a mailbox path built from an address must not lead outside its route's root,
// whatever reaches the delivery. Every trick, with openat2 and with the per-component
// fallback of kernels without it.
class MaildirContainmentTest : public MaildirTest, public testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    MaildirTest::SetUp();
    io::PosixIo::DisableOpenat2ForTest(GetParam());
    mail_ = root_ + "/mail";
    outside_ = root_ + "/outside";
    fs::create_directories(mail_);
    fs::create_directories(outside_);
  }
  void TearDown() override {
    io::PosixIo::DisableOpenat2ForTest(false);
    MaildirTest::TearDown();
  }
  // Only mail/ and outside/ at the top, and nothing at all in outside/.
  void ExpectNothingOutside(const std::string& what) {
    for (const auto& e : fs::directory_iterator(root_)) {
      const std::string name = e.path().filename();
      EXPECT_TRUE(name == "mail" || name == "outside") << what << ": made " << e.path();
    }
    EXPECT_TRUE(fs::is_empty(outside_)) << what;
  }
  std::string mail_;
  std::string outside_;
};

TEST_P(MaildirContainmentTest, NothingIsCreatedOrWrittenOutsideTheRoot) {
  const std::vector<std::string> tricks = {
      "../escaped",
      "../outside/x",
      "example.com/../../escaped",
      "a/../../escaped",
      "..",
      ".",
      "./..",
      "x/./../../escaped",
      "[x:/../../../../outside/escaped]/x",
      "../../../../../../../../../tmp/relais-escaped",
      std::string("a\0/../../escaped", 16),
      "a/..",
      "/",
  };
  for (const std::string& trick : tricks) {
    const Delivery d{mail_ + "/" + trick, "a@b", "c@d", "1.M1P1Q1.h", mail_};
    const Result r = deliverer_.Deliver(d, "x\r\n");
    EXPECT_EQ(r.status, Status::kPermanent) << trick << ": " << r.detail;
    EXPECT_EQ(r.problem, Problem::kRefused) << trick;  // 550 5.1.3
    EXPECT_EQ(r.detail.find(mail_), std::string::npos) << r.detail;
    ExpectNothingOutside(trick);
  }
  EXPECT_FALSE(fs::exists("/tmp/relais-escaped"));
  // Not below the root at all (a template that is not what the root says).
  const Result r =
      deliverer_.Deliver(Delivery{outside_ + "/x", "a@b", "c@d", "1.M1P1Q1.h", mail_}, "x\r\n");
  EXPECT_EQ(r.status, Status::kPermanent) << r.detail;
  ExpectNothingOutside("outside root");
}

TEST_P(MaildirContainmentTest, SymlinksPlantedUnderTheRootAreNotFollowedOut) {
  fs::create_directory_symlink("../outside", mail_ + "/up");
  fs::create_directory_symlink(outside_, mail_ + "/absolute");
  fs::create_directory_symlink("/", mail_ + "/slash");
  fs::create_directory_symlink("/proc/self/cwd", mail_ + "/magic");
  fs::create_directories(mail_ + "/d");
  fs::create_directory_symlink("../../outside", mail_ + "/d/bob");
  for (const char* mailbox :
       {"up/bob", "absolute/bob", "slash/tmp/relais-escaped", "magic/x", "d/bob", "up"}) {
    const Result r = deliverer_.Deliver(
        Delivery{mail_ + "/" + std::string(mailbox), "a@b", "c@d", "1.M1P1Q1.h", mail_}, "x\r\n");
    EXPECT_EQ(r.status, Status::kPermanent) << mailbox << ": " << r.detail;
    ExpectNothingOutside(mailbox);
  }
  // A mailbox known from an earlier delivery whose new/ is then swapped for a symlink.
  const Delivery ok{mail_ + "/e/carol", "a@b", "c@d", "1.M1P1Q1.h", mail_};
  ASSERT_EQ(deliverer_.Deliver(ok, "x\r\n").status, Status::kDelivered);
  fs::remove_all(mail_ + "/e/carol/new");
  fs::create_directory_symlink(outside_, mail_ + "/e/carol/new");
  Delivery later = ok;
  later.unique_name = "2.M1P1Q1.h";
  const Result r = deliverer_.Deliver(later, "x\r\n");
  EXPECT_EQ(r.status, Status::kPermanent) << r.detail;
  ExpectNothingOutside("swapped new/");
  EXPECT_TRUE(fs::is_empty(mail_ + "/e/carol/tmp"));
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutOpenat2, MaildirContainmentTest, testing::Bool());

TEST_F(MaildirTest, UniqueNamesEscapeTheHost) {
  EXPECT_EQ(UniqueName(2'000'001, 5, 9, "a/b:c"), "2.M1P5Q9.a\\057b\\072c");
}

}  // namespace
}  // namespace relais::maildir
