// protocols/mime/seven_bit.cc — see seven_bit.h.
#include "protocols/mime/seven_bit.h"

#include <algorithm>
#include <vector>

#include "core/base/check.h"
#include "core/base/strings.h"

namespace relais::mime {
namespace {

using base::EqualsIgnoreCase;
using base::StartsWithIgnoreCase;

// RFC 2046 5.1.1 allows 70 characters; longer ones are taken (some generators exceed it) up
// to this bound, beyond which the entity is not split into parts.
constexpr size_t kBoundaryBytesMax = 200;
// A quoted-printable line, the '=' of a soft line break included (RFC 2045 6.7 rule 5).
constexpr size_t kQuotedPrintableLineMax = 76;

// Offset just past the line that starts at `pos` (past its LF), or text.size().
size_t LineEnd(std::string_view text, size_t pos) {
  const size_t lf = text.find('\n', pos);
  return lf == std::string_view::npos ? text.size() : lf + 1;
}

bool IsBlankLine(std::string_view line) { return line == "\r\n" || line == "\n"; }

// RFC 5322 2.2: a field name is printable ASCII but ':', followed (obsolete syntax: after
// white space) by ':'. Returns the offset of the ':' or npos.
size_t FieldColon(std::string_view line) {
  size_t i = 0;
  while (i < line.size() && line[i] > ' ' && line[i] < 0x7f && line[i] != ':') {
    ++i;
  }
  if (i == 0) {
    return std::string_view::npos;
  }
  size_t j = i;
  while (j < line.size() && base::IsWsp(line[j])) {
    ++j;
  }
  return j < line.size() && line[j] == ':' ? j : std::string_view::npos;
}

bool IsField(std::string_view line, std::string_view name) {
  const size_t colon = FieldColon(line);
  if (colon == std::string_view::npos || !StartsWithIgnoreCase(line, name)) {
    return false;
  }
  for (size_t i = name.size(); i < colon; ++i) {
    if (!base::IsWsp(line[i])) {
      return false;
    }
  }
  return true;
}

enum class Encoding : uint8_t { kNone, k7Bit, k8Bit, kBinary, kQuotedPrintable, kBase64, kOther };

bool IsIdentity(Encoding e) {
  return e == Encoding::kNone || e == Encoding::k7Bit || e == Encoding::k8Bit ||
         e == Encoding::kBinary;
}

// RFC 2045 5.1 value syntax, with RFC 822 comments and folding white space between tokens.
class ValueLexer {
 public:
  explicit ValueLexer(std::string_view text) : text_(text) {}

  void SkipCfws() {
    while (i_ < text_.size()) {
      const char c = text_[i_];
      if (base::IsWsp(c) || c == '\r' || c == '\n') {
        ++i_;
      } else if (c == '(') {
        SkipComment();
      } else {
        return;
      }
    }
  }
  bool Take(char c) {
    SkipCfws();
    if (i_ < text_.size() && text_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  // RFC 2045 token: printable ASCII but space and tspecials.
  std::string_view Token() {
    SkipCfws();
    const size_t start = i_;
    while (i_ < text_.size() && IsTokenChar(text_[i_])) {
      ++i_;
    }
    return text_.substr(start, i_ - start);
  }
  // A token or a quoted-string, unquoted into `out`. False when neither is there.
  bool Value(std::string& out) {
    SkipCfws();
    out.clear();
    if (i_ < text_.size() && text_[i_] == '"') {
      ++i_;
      while (i_ < text_.size() && text_[i_] != '"') {
        if (text_[i_] == '\\' && i_ + 1 < text_.size()) {
          ++i_;
        }
        if (text_[i_] != '\r' && text_[i_] != '\n') {  // Folding inside the quotes.
          out.push_back(text_[i_]);
        }
        ++i_;
      }
      if (i_ >= text_.size()) {
        return false;  // Unterminated.
      }
      ++i_;
      return true;
    }
    out = Token();
    return !out.empty();
  }

 private:
  static bool IsTokenChar(char c) {
    return c > ' ' && c < 0x7f &&
           std::string_view("()<>@,;:\\\"/[]?=").find(c) == std::string_view::npos;
  }
  void SkipComment() {
    int depth = 0;
    while (i_ < text_.size()) {
      const char c = text_[i_++];
      if (c == '\\') {
        ++i_;
      } else if (c == '(') {
        ++depth;
      } else if (c == ')' && --depth == 0) {
        return;
      }
    }
  }

  std::string_view text_;
  size_t i_ = 0;
};

struct Header {
  size_t begin = 0;  // First field.
  size_t end = 0;    // Past the last field line.
  size_t body = 0;   // Past the empty line that ends the section (== end when there is none).
  bool eight_bit = false;
  bool has_content_type = false;
  bool has_mime_version = false;
  std::string type;  // Lower case; empty when no (valid) Content-Type.
  std::string subtype;
  std::string boundary;
  Encoding encoding = Encoding::kNone;
};

void ParseContentType(std::string_view value, Header& h) {
  ValueLexer lex(value);
  const std::string type = base::AsciiStrToLower(lex.Token());
  if (type.empty() || !lex.Take('/')) {
    return;  // RFC 2045 5.2: an invalid Content-Type means text/plain.
  }
  const std::string subtype = base::AsciiStrToLower(lex.Token());
  if (subtype.empty()) {
    return;
  }
  h.has_content_type = true;
  h.type = type;
  h.subtype = subtype;
  std::string v;
  while (lex.Take(';')) {
    const std::string_view attribute = lex.Token();
    if (attribute.empty() || !lex.Take('=') || !lex.Value(v)) {
      return;
    }
    if (EqualsIgnoreCase(attribute, "boundary") && h.boundary.empty()) {
      h.boundary = v.size() <= kBoundaryBytesMax ? v : "";
    }
  }
}

Encoding ParseEncoding(std::string_view value) {
  ValueLexer lex(value);
  const std::string_view token = lex.Token();
  if (EqualsIgnoreCase(token, "7bit")) {
    return Encoding::k7Bit;
  }
  if (EqualsIgnoreCase(token, "8bit")) {
    return Encoding::k8Bit;
  }
  if (EqualsIgnoreCase(token, "binary")) {
    return Encoding::kBinary;
  }
  if (EqualsIgnoreCase(token, "quoted-printable")) {
    return Encoding::kQuotedPrintable;
  }
  if (EqualsIgnoreCase(token, "base64")) {
    return Encoding::kBase64;
  }
  return Encoding::kOther;
}

class Converter {
 public:
  Converter(std::string_view in, const SevenBitOptions& options, std::string& out)
      : in_(in), options_(options), out_(out) {}

  SevenBitOutcome Run() {
    const SevenBitOutcome outcome = Entity(0, /*digest=*/false, /*top=*/true);
    RELAIS_DCHECK(outcome != SevenBitOutcome::kConverted || pos_ == in_.size());
    return outcome;
  }

 private:
  enum class Rewrite : uint8_t { kNone, kSevenBit, kQuotedPrintable };

  // True when the line at `pos` delimits a part of an open multipart (RFC 2046 5.1.1, matched
  // as a prefix); `index` names it (innermost wins), `close` says "--boundary--".
  bool IsDelimiter(size_t pos, size_t& index, bool& close) const {
    if (boundaries_.empty() || in_.size() - pos < 2 || in_[pos] != '-' || in_[pos + 1] != '-') {
      return false;
    }
    const std::string_view rest = in_.substr(pos + 2, LineEnd(in_, pos) - pos - 2);
    for (size_t k = boundaries_.size(); k-- > 0;) {
      if (rest.starts_with(boundaries_[k])) {
        index = k;
        close = rest.substr(boundaries_[k].size()).starts_with("--");
        return true;
      }
    }
    return false;
  }
  bool IsDelimiter(size_t pos) const {
    size_t index;
    bool close;
    return IsDelimiter(pos, index, close);
  }
  // Moves pos_ to the next delimiter line or the end.
  void SkipToDelimiter() {
    if (boundaries_.empty()) {
      pos_ = in_.size();
      return;
    }
    while (pos_ < in_.size() && !IsDelimiter(pos_)) {
      pos_ = LineEnd(in_, pos_);
    }
  }

  // Reads the header section at pos_: fields up to an empty line (consumed), a delimiter or a
  // line that is not a field (both left for the body).
  Header ReadHeader() {
    Header h;
    h.begin = pos_;
    size_t field = std::string_view::npos;  // Start of the field being read.
    auto finish_field = [&](size_t end) {
      if (field == std::string_view::npos) {
        return;
      }
      const std::string_view text = in_.substr(field, end - field);
      const size_t colon = FieldColon(text);
      const std::string_view value = text.substr(colon + 1);
      if (IsField(text, "content-type") && !h.has_content_type) {
        ParseContentType(value, h);
      } else if (IsField(text, "content-transfer-encoding") && h.encoding == Encoding::kNone) {
        h.encoding = ParseEncoding(value);
      } else if (IsField(text, "mime-version")) {
        h.has_mime_version = true;
      }
    };
    while (pos_ < in_.size()) {
      const size_t end = LineEnd(in_, pos_);
      const std::string_view line = in_.substr(pos_, end - pos_);
      if (IsBlankLine(line)) {
        finish_field(pos_);
        h.end = pos_;
        h.body = end;
        pos_ = end;
        return h;
      }
      const bool continuation = base::IsWsp(line[0]) && field != std::string_view::npos;
      if (!continuation && (IsDelimiter(pos_) || FieldColon(line) == std::string_view::npos)) {
        break;
      }
      if (!continuation) {
        finish_field(pos_);
        field = pos_;
      }
      h.eight_bit = h.eight_bit || !base::IsAscii(line);
      pos_ = end;
    }
    finish_field(pos_);
    h.end = h.body = pos_;
    return h;
  }

  // Copies the header section of `h`, with its Content-Transfer-Encoding as `rewrite` says.
  // `top`: the header of a message (not of a part), which may need MIME-Version.
  void WriteHeader(const Header& h, Rewrite rewrite, bool top) {
    if (rewrite == Rewrite::kNone) {
      out_.append(in_.substr(h.begin, h.body - h.begin));
      return;
    }
    bool skipping = false;
    for (size_t pos = h.begin; pos < h.end;) {
      const size_t end = LineEnd(in_, pos);
      const std::string_view line = in_.substr(pos, end - pos);
      if (!base::IsWsp(line[0])) {
        skipping = IsField(line, "content-transfer-encoding");
      }
      if (!skipping) {
        out_.append(line);
      }
      pos = end;
    }
    if (rewrite == Rewrite::kSevenBit) {
      out_.append("Content-Transfer-Encoding: 7bit\r\n");
    } else {
      if (top && !h.has_mime_version) {
        out_.append("MIME-Version: 1.0\r\n");
      }
      if (!h.has_content_type) {
        // RFC 1428: 8-bit text of no declared charset. The default, us-ascii, would be false.
        out_.append("Content-Type: text/plain; charset=unknown-8bit\r\n");
      }
      out_.append("Content-Transfer-Encoding: quoted-printable\r\n");
    }
    out_.append(in_.substr(h.end, h.body - h.end));
  }

  // One entity (the message, a part, or an attached message) from pos_ to its end: the next
  // delimiter of an open multipart, or the end of the input.
  SevenBitOutcome Entity(uint32_t depth, bool digest, bool top) {
    Header h = ReadHeader();
    if (h.eight_bit) {
      return SevenBitOutcome::kEightBitHeader;
    }
    if (!h.has_content_type) {
      // RFC 2046 5.1.5: in a multipart/digest the default is message/rfc822.
      h.type = digest ? "message" : "text";
      h.subtype = digest ? "rfc822" : "plain";
    }
    const bool identity = IsIdentity(h.encoding);
    const bool relabel = h.encoding == Encoding::k8Bit || h.encoding == Encoding::kBinary;
    const bool nested =
        identity && ((h.type == "multipart" && !h.boundary.empty()) ||
                     (h.type == "message" && (h.subtype == "rfc822" || h.subtype == "global")));
    if (!nested) {
      return Leaf(h, top, /*too_deep=*/false);
    }
    if (depth >= options_.nesting_max) {
      return Leaf(h, top, /*too_deep=*/true);
    }
    WriteHeader(h, relabel ? Rewrite::kSevenBit : Rewrite::kNone, top);
    if (h.type == "message") {
      return Entity(depth + 1, /*digest=*/false, /*top=*/true);  // A message of its own.
    }
    return Multipart(depth + 1, h.boundary, h.subtype == "digest");
  }

  // The body of a multipart entity, whose header is written; pos_ is at its first line.
  SevenBitOutcome Multipart(uint32_t depth, const std::string& boundary, bool digest) {
    boundaries_.push_back(boundary);
    const size_t mine = boundaries_.size() - 1;
    SevenBitOutcome outcome = Between();  // The preamble.
    while (outcome == SevenBitOutcome::kConverted && pos_ < in_.size()) {
      size_t index = 0;
      bool close = false;
      const bool delimiter = IsDelimiter(pos_, index, close);
      RELAIS_DCHECK(delimiter);
      if (index != mine) {
        break;  // An enclosing multipart goes on: this one lacked its close delimiter.
      }
      const size_t end = LineEnd(in_, pos_);
      // RFC 2046 5.1.1: what follows the boundary on its line is padding to be ignored, so a
      // delimiter is written as such, never copied: bytes after it (8-bit, a bare CR that hid
      // the rest of a line) would otherwise pass unconverted.
      base::StrAppend(&out_, "--", boundary, close ? "--" : "", "\r\n");
      pos_ = end;
      if (close) {
        boundaries_.pop_back();
        return Between();  // The epilogue, up to an enclosing delimiter or the end.
      }
      outcome = Entity(depth, digest, /*top=*/false);
    }
    boundaries_.pop_back();
    return outcome;
  }

  // A preamble or epilogue: copied, but 8-bit bytes there cannot be labelled.
  SevenBitOutcome Between() {
    const size_t start = pos_;
    SkipToDelimiter();
    const std::string_view text = in_.substr(start, pos_ - start);
    if (!base::IsAscii(text)) {
      return SevenBitOutcome::kEightBitOutsideParts;
    }
    out_.append(text);
    return SevenBitOutcome::kConverted;
  }

  // An entity whose body is not split further: copied when 7-bit, else re-encoded.
  SevenBitOutcome Leaf(const Header& h, bool top, bool too_deep) {
    SkipToDelimiter();
    const std::string_view body = in_.substr(h.body, pos_ - h.body);
    if (!!base::IsAscii(body)) {
      out_.append(in_.substr(h.begin, pos_ - h.begin));
      return SevenBitOutcome::kConverted;
    }
    if (too_deep) {
      return SevenBitOutcome::kNestingTooDeep;
    }
    if (h.type == "message") {
      return SevenBitOutcome::kEightBitMessagePart;
    }
    if (h.type == "multipart" || !IsIdentity(h.encoding)) {
      return SevenBitOutcome::kEightBitEncodedPart;  // Or a multipart without a boundary.
    }
    WriteHeader(h, Rewrite::kQuotedPrintable, top);
    AppendQuotedPrintable(body, out_);
    return SevenBitOutcome::kConverted;
  }

  const std::string_view in_;
  const SevenBitOptions& options_;
  std::string& out_;
  size_t pos_ = 0;
  std::vector<std::string> boundaries_;  // Of the open multiparts, outermost first.
};

}  // namespace

void AppendQuotedPrintable(std::string_view bytes, std::string& out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  size_t column = 0;
  bool soft = false;  // The current output line follows a soft line break.
  for (size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    if (c == '\r' && i + 1 < bytes.size() && bytes[i + 1] == '\n') {
      out.append("\r\n");  // A hard line break stays one.
      ++i;
      column = 0;
      soft = false;
      continue;
    }
    const auto u = static_cast<unsigned char>(c);
    bool literal = u >= 33 && u <= 126 && c != '=';
    if (base::IsWsp(c)) {
      // Rule 3: white space at the end of an encoded line would be lost in transport.
      const bool at_line_end =
          i + 1 == bytes.size() ||
          (bytes[i + 1] == '\r' && i + 2 < bytes.size() && bytes[i + 2] == '\n');
      literal = !at_line_end;
    }
    if (c == '-' && column == 0 && soft) {
      // A soft line break must not make a line that reads as a multipart delimiter.
      literal = false;
    }
    const size_t width = literal ? 1 : 3;
    if (column + width > kQuotedPrintableLineMax - 1) {
      out.append("=\r\n");
      column = 0;
      soft = true;
      if (c == '-') {
        literal = false;
      }
    }
    if (literal) {
      out.push_back(c);
      column += 1;
    } else {
      out.push_back('=');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0x0f]);
      column += 3;
    }
  }
}

SevenBitOutcome ConvertTo7Bit(std::string_view message, const SevenBitOptions& options,
                              std::string& out) {
  out.clear();
  if (!!base::IsAscii(message)) {
    out.assign(message);
    return SevenBitOutcome::kConverted;
  }
  out.reserve(message.size() + message.size() / 4);
  return Converter(message, options, out).Run();
}

std::string_view Describe(SevenBitOutcome outcome) {
  switch (outcome) {
    case SevenBitOutcome::kConverted:
      return "converted to 7 bits";
    case SevenBitOutcome::kEightBitHeader:
      return "8-bit bytes in a header section";
    case SevenBitOutcome::kEightBitEncodedPart:
      return "8-bit bytes in a part whose encoding cannot be changed";
    case SevenBitOutcome::kEightBitMessagePart:
      return "8-bit bytes in a message/* part that must be 7-bit";
    case SevenBitOutcome::kEightBitOutsideParts:
      return "8-bit bytes in a multipart preamble or epilogue";
    case SevenBitOutcome::kNestingTooDeep:
      return "8-bit bytes nested too deep in MIME parts";
  }
  return "?";
}

}  // namespace relais::mime
