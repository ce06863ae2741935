// core/mail/envelope_test.cc — RFC 3461 helpers: NOTIFY text and xtext.
#include "core/mail/envelope.h"

#include <gtest/gtest.h>

namespace relais::mail {
namespace {

TEST(Envelope, NotifyText) {
  EXPECT_EQ(NotifyText(0), "");
  EXPECT_EQ(NotifyText(kNotifyNever), "NEVER");
  EXPECT_EQ(NotifyText(kNotifyDelay | kNotifySuccess), "SUCCESS,DELAY");
  EXPECT_EQ(NotifyText(kNotifySuccess | kNotifyFailure | kNotifyDelay), "SUCCESS,FAILURE,DELAY");
}

TEST(Envelope, Xtext) {
  EXPECT_TRUE(XtextValid("rfc822;bob@example.com"));
  EXPECT_TRUE(XtextValid("a+2Bb+3Dc"));
  EXPECT_EQ(XtextDecode("a+2Bb+3Dc"), "a+b=c");
  EXPECT_FALSE(XtextValid("a=b"));
  EXPECT_FALSE(XtextValid("a+2b"));  // Lower-case hex.
  EXPECT_FALSE(XtextValid("a+2"));
  EXPECT_FALSE(XtextValid("a b"));
  EXPECT_FALSE(XtextValid("caf\xc3\xa9"));
}

}  // namespace
}  // namespace relais::mail
