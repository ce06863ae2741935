// protocols/mime/seven_bit.h — 8bit-to-7bit conversion of a whole message (RFC 2045, RFC 6152),
// for a next hop that does not offer 8BITMIME.
//
// RFC 6152 3 lets a client that meets a server without 8BITMIME either return the message or
// convert it to 7 bits; users expect it delivered, so the message is converted as Postfix does:
// every leaf body part (the top-level body of a non-multipart message, each part of a
// multipart, recursively, and the parts of an attached message/rfc822 or message/global) that
// holds 8-bit bytes and is labelled 7bit, 8bit, binary or not at all is re-encoded
// quoted-printable (RFC 2045 6.7) and its Content-Transfer-Encoding field replaced. A
// multipart or message entity labelled 8bit or binary is relabelled 7bit (RFC 2045 6.4 allows
// only identity encodings there). Parts without 8-bit bytes are copied unchanged.
//
// What cannot be converted without changing the message's meaning is refused, never mangled:
// 8-bit bytes in any header section (RFC 2047 would have to guess a charset and the field's
// syntax), in a part already labelled base64 or quoted-printable (broken, and not ours to
// re-encode), in a message/partial or other message/* part (RFC 2046 5.2: 7bit only), or in a
// multipart preamble or epilogue; and nesting deeper than `nesting_max` around 8-bit bytes.
//
// Pure: no I/O, no state between calls. One pass over the lines to find each leaf's extent and
// one to copy or encode it, so the work is linear in the message size; multipart boundaries
// are matched as prefixes, as Postfix and most readers do. Output is at most about 3.1 times
// the input (quoted-printable of 8-bit bytes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace relais::mime {

struct SevenBitOptions {
  // Multipart and attached-message levels entered before giving up (RFC 2046 sets no limit;
  // Postfix's mime_nesting_limit is 100).
  uint32_t nesting_max = 100;
};

enum class [[nodiscard]] SevenBitOutcome : uint8_t{
    kConverted,             // `out` holds the 7-bit message.
    kEightBitHeader,        // A header section (of the message, a part or an attached message).
    kEightBitEncodedPart,   // A part labelled base64, quoted-printable or an unknown encoding.
    kEightBitMessagePart,   // message/partial, message/external-body or another message/*.
    kEightBitOutsideParts,  // A multipart preamble or epilogue.
    kNestingTooDeep,        // 8-bit bytes below nesting_max levels.
};

// Converts `message` (header and body, CRLF lines) into `out` (cleared first). On any outcome
// but kConverted, `out` holds nothing useful. A message without 8-bit bytes comes out as it
// went in.
SevenBitOutcome ConvertTo7Bit(std::string_view message, const SevenBitOptions& options,
                              std::string& out);

// A short English phrase for a refusal ("8-bit bytes in a header section"), for result texts.
[[nodiscard]] std::string_view Describe(SevenBitOutcome outcome);

// Quoted-printable (RFC 2045 6.7) of `bytes` appended to `out`: CRLF stays a hard line break,
// every other byte outside printable ASCII, '=' and white space before a line break are
// encoded, and lines are kept to 76 characters with soft line breaks.
void AppendQuotedPrintable(std::string_view bytes, std::string& out);

}  // namespace relais::mime
