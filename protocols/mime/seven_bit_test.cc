// protocols/mime/seven_bit_test.cc — 8bit-to-7bit conversion for next hops without 8BITMIME.
#include "protocols/mime/seven_bit.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace relais::mime {
namespace {

bool IsSevenBit(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      return false;
    }
  }
  return true;
}

int Hex(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

// RFC 2045 6.7 decoding, strict about what the encoder may produce.
std::string DecodeQuotedPrintable(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '=') {
      out.push_back(in[i]);
      continue;
    }
    if (in.substr(i + 1, 2) == "\r\n") {
      i += 2;  // Soft line break.
      continue;
    }
    EXPECT_TRUE(i + 2 < in.size() && Hex(in[i + 1]) >= 0 && Hex(in[i + 2]) >= 0) << in;
    out.push_back(static_cast<char>(Hex(in[i + 1]) * 16 + Hex(in[i + 2])));
    i += 2;
  }
  return out;
}

void ExpectLinesWithin76(std::string_view s) {
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find("\r\n", start);
    end = end == std::string_view::npos ? s.size() : end;
    EXPECT_LE(end - start, 76u) << s.substr(start, end - start);
    start = end + 2;
  }
}

std::string Convert(std::string_view in, SevenBitOutcome expect = SevenBitOutcome::kConverted,
                    SevenBitOptions options = {}) {
  std::string out;
  EXPECT_EQ(ConvertTo7Bit(in, options, out), expect) << in;
  if (expect == SevenBitOutcome::kConverted) {
    EXPECT_TRUE(IsSevenBit(out)) << out;
  }
  return out;
}

TEST(SevenBit, SevenBitMessageIsUnchanged) {
  const std::string in =
      "Subject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n";
  EXPECT_EQ(Convert(in), in);
}

TEST(SevenBit, TopLevelEightBitBodyBecomesQuotedPrintable) {
  const std::string body = "caf\xc3\xa9 = ok\r\ntrailing space \r\ntab\t\r\n.\r\n";
  const std::string in =
      "Received: from x\r\n\tby y; date\r\nMIME-Version: 1.0\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: 8bit\r\nSubject: s\r\n\r\n" +
      body;
  const std::string out = Convert(in);
  EXPECT_EQ(out,
            "Received: from x\r\n\tby y; date\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nSubject: s\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            "caf=C3=A9 =3D ok\r\ntrailing space=20\r\ntab=09\r\n.\r\n");
  EXPECT_EQ(DecodeQuotedPrintable(out.substr(out.find("\r\n\r\n") + 4)), body);
}

TEST(SevenBit, FoldedEncodingFieldIsReplacedWhole) {
  const std::string out =
      Convert("Content-Transfer-Encoding:\r\n  8bit (folded)\r\nSubject: s\r\n\r\n\xe9\r\n");
  EXPECT_EQ(out,
            "Subject: s\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=unknown-8bit\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n");
}

TEST(SevenBit, NonMimeMessageGetsMimeVersionAndUnknownCharset) {
  const std::string out = Convert("Subject: s\r\n\r\n\xe9t\xe9\r\n");
  EXPECT_EQ(out,
            "Subject: s\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=unknown-8bit\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9t=E9\r\n");
}

TEST(SevenBit, LongLinesGetSoftBreaksAndDecodeBack) {
  std::string body;
  for (int i = 0; i < 300; ++i) {
    body.push_back(static_cast<char>(i % 3 == 0 ? 0xc3 : (i % 3 == 1 ? 'a' : ' ')));
  }
  body += "\r\n" + std::string(200, '-') + "\r\n";
  const std::string out = Convert("Subject: s\r\n\r\n" + body);
  const std::string encoded = out.substr(out.find("\r\n\r\n") + 4);
  ExpectLinesWithin76(encoded);
  EXPECT_EQ(DecodeQuotedPrintable(encoded), body);
}

TEST(SevenBit, SoftBreakNeverStartsALineWithADash) {
  // A soft line break before "--b" would make a delimiter line the reader did not write.
  std::string line = std::string(74, 'x') + "\xe9--b";
  const std::string in =
      "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + line + "\r\n--b--\r\n";
  const std::string out = Convert(in);
  size_t start = out.find("\r\n--b\r\n") + 7;
  for (size_t at = out.find("\r\n", start); at != std::string::npos && at + 2 < out.size();
       at = out.find("\r\n", at + 2)) {
    if (out.substr(at + 2, 5) == "--b--") {
      break;
    }
    EXPECT_NE(out.substr(at + 2, 3), "--b") << out;
  }
}

TEST(SevenBit, MultipartPartsAreConvertedRecursively) {
  const std::string text = "gr\xc3\xbc\xc3\x9f dich\r\n";
  const std::string inner = "\xe2\x82\xac 5\r\n";
  const std::string in =
      "Subject: m\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed; boundary=\"outer b\"\r\n"
      "Content-Transfer-Encoding: 8bit\r\n\r\n"
      "preamble\r\n"
      "--outer b\r\n"
      "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
      text +
      "--outer b\r\n"
      "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
      "AAECAw==\r\n"
      "--outer b\r\n"
      "Content-Type: multipart/alternative; (comment) boundary=inner\r\n\r\n"
      "--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
      inner +
      "--inner--\r\n"
      "--outer b--\r\nepilogue\r\n";
  const std::string out = Convert(in);
  EXPECT_NE(out.find("boundary=\"outer b\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                     "gr=C3=BC=C3=9F dich\r\n--outer b\r\n"),
            std::string::npos)
      << out;
  // The base64 part and the 7-bit text around the parts are untouched.
  EXPECT_NE(out.find("Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--outer b\r\n"),
            std::string::npos);
  EXPECT_NE(out.find("text/html; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E2=82=AC 5\r\n"
                     "--inner--\r\n--outer b--\r\nepilogue\r\n"),
            std::string::npos)
      << out;
  EXPECT_TRUE(out.starts_with("Subject: m\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed"));
}

TEST(SevenBit, AttachedMessageBodyIsConvertedAndRelabelled) {
  const std::string in =
      "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
      "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
      "Subject: inner\r\nContent-Type: text/plain; charset=latin1\r\n\r\n\xe9t\xe9\r\n"
      "--b--\r\n";
  const std::string out = Convert(in);
  EXPECT_EQ(out,
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            "Subject: inner\r\nContent-Type: text/plain; charset=latin1\r\n"
            "MIME-Version: 1.0\r\n"  // The attached message is a message of its own.
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9t=E9\r\n"
            "--b--\r\n");
}

TEST(SevenBit, DigestPartsDefaultToAttachedMessages) {
  const std::string out = Convert(
      "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: a\r\n\r\n"
      "\xe0\r\n--d--\r\n");
  EXPECT_NE(out.find("Subject: a\r\nMIME-Version: 1.0\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("=E0\r\n--d--"), std::string::npos) << out;
}

TEST(SevenBit, MissingCloseDelimiterEndsAtTheEnclosingOne) {
  const std::string out = Convert(
      "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n"
      "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe9\r\n"
      "--a\r\n\r\n\xe8\r\n--a--\r\n");
  EXPECT_NE(out.find("=E9\r\n--a\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("=E8\r\n--a--\r\n"), std::string::npos) << out;
}

TEST(SevenBit, RefusesWhatCannotBeConvertedFaithfully) {
  // 8-bit header fields, at every level.
  Convert("Subject: caf\xc3\xa9\r\n\r\nx\r\n", SevenBitOutcome::kEightBitHeader);
  Convert("Subject: x\r\n folded caf\xc3\xa9\r\n\r\nx\r\n", SevenBitOutcome::kEightBitHeader);
  Convert("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nX-A: \xe9\r\n\r\nx\r\n--b--\r\n",
          SevenBitOutcome::kEightBitHeader);
  Convert("Content-Type: message/global\r\n\r\nSubject: \xe9\r\n\r\nx\r\n",
          SevenBitOutcome::kEightBitHeader);
  // A part that is already encoded.
  Convert(
      "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\n\xe9\r\n--b--\r\n",
      SevenBitOutcome::kEightBitEncodedPart);
  Convert("Content-Transfer-Encoding: x-uuencode\r\n\r\n\xe9\r\n",
          SevenBitOutcome::kEightBitEncodedPart);
  // A multipart without a boundary, or with an encoding it may not have.
  Convert("Content-Type: multipart/mixed\r\n\r\n\xe9\r\n", SevenBitOutcome::kEightBitEncodedPart);
  Convert(
      "Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
      "--b\r\n\r\n\xe9\r\n--b--\r\n",
      SevenBitOutcome::kEightBitEncodedPart);
  // message/partial must be 7-bit (RFC 2046 5.2.2).
  Convert("Content-Type: message/partial; id=x; number=1\r\n\r\n\xe9\r\n",
          SevenBitOutcome::kEightBitMessagePart);
  // Preamble and epilogue have no header to label them.
  Convert("Content-Type: multipart/mixed; boundary=b\r\n\r\n\xe9\r\n--b\r\n\r\nx\r\n--b--\r\n",
          SevenBitOutcome::kEightBitOutsideParts);
  Convert("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n\xe9\r\n",
          SevenBitOutcome::kEightBitOutsideParts);
}

std::string Nested(int levels, std::string_view leaf) {
  std::string head, tail;
  for (int i = 0; i < levels; ++i) {
    const std::string b = "b" + std::to_string(i) + "x";  // None a prefix of another.
    head += "Content-Type: multipart/mixed; boundary=" + b + "\r\n\r\n--" + b + "\r\n";
    tail = "--" + b + "--\r\n" + tail;
  }
  return head + "\r\n" + std::string(leaf) + tail;
}

TEST(SevenBit, NestingIsBounded) {
  const SevenBitOptions options{.nesting_max = 10};
  Convert(Nested(10, "\xe9\r\n"), SevenBitOutcome::kConverted, options);
  Convert(Nested(11, "\xe9\r\n"), SevenBitOutcome::kNestingTooDeep, options);
  // 8-bit near the top, 7-bit below the bound: what is too deep is copied as it is.
  const std::string deep = Nested(11, "x\r\n");
  const std::string in =
      "Content-Type: multipart/mixed; boundary=top\r\n\r\n--top\r\n\r\n\xe9\r\n--top\r\n" + deep +
      "--top--\r\n";
  const std::string out = Convert(in, SevenBitOutcome::kConverted, options);
  EXPECT_NE(out.find(deep), std::string::npos);
  // The default bound stops a hostile depth without running out of stack.
  Convert(Nested(5000, "\xe9\r\n"), SevenBitOutcome::kNestingTooDeep);
}

TEST(SevenBit, AdversarialInputStaysLinear) {
  // Many delimiter-like lines under many open boundaries, and long 8-bit lines: time grows
  // with the size, not its square. Each input is about 4 MB.
  std::string deep = Nested(90, "");
  std::string lines;
  while (lines.size() < 4'000'000) {
    lines += "--b\xe9 not quite a delimiter of any level but close\r\n";
  }
  const std::string hostile = deep.substr(0, deep.find("\r\n\r\n--b89x\r\n") + 12) + "\r\n" + lines;
  const std::string plain = "Subject: s\r\n\r\n" + std::string(4'000'000, '\xe9') + "\r\n";
  for (const std::string* in : {&hostile, &plain}) {
    const auto start = std::chrono::steady_clock::now();
    std::string out;
    EXPECT_EQ(ConvertTo7Bit(*in, {}, out), SevenBitOutcome::kConverted);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    EXPECT_LT(ms, 5'000) << in->size() << " bytes";
    EXPECT_TRUE(IsSevenBit(out));
  }
}

}  // namespace
}  // namespace relais::mime
