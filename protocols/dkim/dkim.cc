// protocols/dkim/dkim.cc — see dkim.h. Section numbers are RFC 6376's.
#include "protocols/dkim/dkim.h"

#include <algorithm>
#include <charconv>

#include "core/base/strings.h"

namespace relais::dkim {

using base::AsciiStrToLower;
using base::EqualsIgnoreCase;
using base::StrAppend;
using base::StrCat;

std::string_view ResultName(Result result) {
  switch (result) {
    case Result::kPass:
      return "pass";
    case Result::kFail:
      return "fail";
    case Result::kNeutral:
      return "neutral";
    case Result::kPolicy:
      return "policy";
    case Result::kTempError:
      return "temperror";
    case Result::kPermError:
      return "permerror";
  }
  return "neutral";
}

namespace {

bool IsWsp(char c) { return c == ' ' || c == '\t'; }
bool IsFws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view TrimFws(std::string_view s) {
  while (!s.empty() && IsFws(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && IsFws(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

std::string StripFws(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (!IsFws(c)) {
      out.push_back(c);
    }
  }
  return out;
}

// 3.2 tag-list: "a=1; b=2". nullopt on a malformed list or a repeated tag.
std::optional<std::map<std::string, std::string>> ParseTags(std::string_view list) {
  std::map<std::string, std::string> tags;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t semi = list.find(';', start);
    const std::string_view spec =
        TrimFws(list.substr(start, semi == std::string_view::npos ? semi : semi - start));
    start = semi == std::string_view::npos ? list.size() + 1 : semi + 1;
    if (spec.empty()) {
      if (semi == std::string_view::npos) {
        break;  // A trailing ';' is allowed.
      }
      continue;
    }
    const size_t eq = spec.find('=');
    if (eq == std::string_view::npos) {
      return std::nullopt;
    }
    const std::string name(TrimFws(spec.substr(0, eq)));
    if (name.empty() || !tags.emplace(name, std::string(TrimFws(spec.substr(eq + 1)))).second) {
      return std::nullopt;
    }
  }
  return tags;
}

bool Number(std::string_view text, uint64_t& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

std::vector<std::string> SplitColons(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t colon = text.find(':', start);
    const std::string_view part =
        TrimFws(text.substr(start, colon == std::string_view::npos ? colon : colon - start));
    out.emplace_back(part);
    if (colon == std::string_view::npos) {
      break;
    }
    start = colon + 1;
  }
  return out;
}

// The field with the value of its b= tag (and the whitespace around it) removed: what the
// signature covers of itself (3.7).
std::string WithoutSignatureValue(std::string_view raw) {
  const size_t colon = raw.find(':');
  if (colon == std::string_view::npos) {
    return std::string(raw);
  }
  size_t start = colon + 1;
  while (start <= raw.size()) {
    size_t semi = raw.find(';', start);
    const size_t end = semi == std::string_view::npos ? raw.size() : semi;
    const std::string_view spec = raw.substr(start, end - start);
    const size_t eq = spec.find('=');
    if (eq != std::string_view::npos && TrimFws(spec.substr(0, eq)) == "b") {
      std::string out(raw.substr(0, start + eq + 1));
      // Keep the field's final CRLF when the tag ran to the end.
      std::string_view rest = raw.substr(end);
      if (semi == std::string_view::npos && raw.ends_with("\r\n")) {
        rest = "\r\n";
      }
      out.append(rest);
      return out;
    }
    if (semi == std::string_view::npos) {
      break;
    }
    start = semi + 1;
  }
  return std::string(raw);
}

// The header hash input for `names` plus the signature field itself, without its final CRLF.
std::string SignedHeaderData(const std::vector<HeaderField>& header,
                             const std::vector<std::string>& names, std::string_view signature_raw,
                             Canonicalization c) {
  std::string data;
  std::vector<bool> used(header.size(), false);
  for (const std::string& name : names) {
    // The last unused instance, counting from the bottom (5.4.2).
    for (size_t i = header.size(); i-- > 0;) {
      if (!used[i] && EqualsIgnoreCase(TrimFws(header[i].name), name)) {
        used[i] = true;
        data.append(CanonicalHeader(header[i].raw, c));
        break;
      }
    }
  }
  std::string self = CanonicalHeader(WithoutSignatureValue(signature_raw), c);
  if (self.ends_with("\r\n")) {
    self.resize(self.size() - 2);
  }
  data.append(self);
  return data;
}

}  // namespace

std::string Normalize(std::string_view message) {
  std::string out;
  out.reserve(message.size() + message.size() / 32);
  for (size_t i = 0; i < message.size(); ++i) {
    const char c = message[i];
    if (c == '\r') {
      out.append("\r\n");
      if (i + 1 < message.size() && message[i + 1] == '\n') {
        ++i;
      }
    } else if (c == '\n') {
      out.append("\r\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::vector<HeaderField> SplitHeader(std::string_view message, size_t& body_offset) {
  std::vector<HeaderField> fields;
  size_t pos = 0;
  body_offset = message.size();
  while (pos < message.size()) {
    if (message.substr(pos).starts_with("\r\n")) {
      body_offset = pos + 2;
      return fields;
    }
    // A field runs until a line that does not start with WSP.
    size_t end = pos;
    while (true) {
      const size_t eol = message.find("\r\n", end);
      if (eol == std::string_view::npos) {
        end = message.size();
        break;
      }
      end = eol + 2;
      if (end >= message.size() || !IsWsp(message[end])) {
        break;
      }
    }
    const std::string_view raw = message.substr(pos, end - pos);
    const size_t colon = raw.find(':');
    fields.push_back({raw.substr(0, colon == std::string_view::npos ? 0 : colon), raw});
    pos = end;
  }
  return fields;
}

std::string CanonicalHeader(std::string_view raw, Canonicalization c) {
  if (c == Canonicalization::kSimple) {
    return std::string(raw);
  }
  const size_t colon = raw.find(':');
  std::string out = AsciiStrToLower(TrimFws(raw.substr(0, colon)));
  out.push_back(':');
  if (colon == std::string_view::npos) {
    return out + "\r\n";
  }
  // Unfold, turn every run of WSP into one SP, drop WSP around the value.
  std::string value;
  bool space = false;
  for (char ch : raw.substr(colon + 1)) {
    if (ch == '\r' || ch == '\n') {
      continue;
    }
    if (IsWsp(ch)) {
      space = true;
      continue;
    }
    if (space && !value.empty()) {
      value.push_back(' ');
    }
    space = false;
    value.push_back(ch);
  }
  return out + value + "\r\n";
}

BodyHasher::BodyHasher(Canonicalization c, std::optional<uint64_t> limit)
    : canonicalization_(c), limit_(limit) {}

void BodyHasher::Update(std::string_view bytes) {
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      line_.append(bytes);
      return;
    }
    std::string_view piece = bytes.substr(0, nl);
    bytes.remove_prefix(nl + 1);
    if (line_.empty() && !piece.empty() && piece.back() == '\r') {
      piece.remove_suffix(1);
      Line(piece);  // The usual case: a whole line in this piece, not copied.
      continue;
    }
    line_.append(piece);
    if (!line_.empty() && line_.back() == '\r') {
      line_.pop_back();
      Line(line_);
      line_.clear();
    } else {
      line_.push_back('\n');  // A bare LF is part of the line.
    }
  }
}

void BodyHasher::Line(std::string_view line) {
  if (canonicalization_ == Canonicalization::kRelaxed) {
    // Inner runs of WSP become one SP, trailing WSP goes; written into a reused buffer.
    relaxed_.resize(line.size());
    char* out = relaxed_.data();
    bool space = false;
    for (char c : line) {
      if (c == ' ' || c == '\t') {
        space = true;
        continue;
      }
      if (space) {
        *out++ = ' ';
        space = false;
      }
      *out++ = c;
    }
    line = std::string_view(relaxed_.data(), static_cast<size_t>(out - relaxed_.data()));
  }
  if (line.empty()) {
    ++blank_lines_;  // Dropped if nothing but empty lines follows.
    return;
  }
  for (; blank_lines_ > 0; --blank_lines_) {
    Emit("\r\n");
  }
  Emit(line);
  Emit("\r\n");
}

void BodyHasher::Emit(std::string_view bytes) {
  any_ = true;
  canonical_bytes_ += bytes.size();
  if (limit_) {
    const uint64_t room = *limit_ > hashed_ ? *limit_ - hashed_ : 0;
    bytes = bytes.substr(0, static_cast<size_t>(std::min<uint64_t>(room, bytes.size())));
  }
  hashed_ += bytes.size();
  // Gathered and hashed in blocks: one SHA-256 update per line would cost more than the hash.
  pending_.append(bytes);
  if (pending_.size() >= kPendingBytes) {
    sha_.Update(pending_);
    pending_.clear();
  }
}

tls::Sha256Digest BodyHasher::Finish() {
  if (!line_.empty()) {
    Line(line_);  // A last line without CRLF gets one.
    line_.clear();
  }
  if (!any_ && canonicalization_ == Canonicalization::kSimple) {
    Emit("\r\n");  // 3.4.3: an empty body is one CRLF.
  }
  sha_.Update(pending_);
  pending_.clear();
  return sha_.Finish();
}

BodyHashes::BodyHashes(size_t header_bytes_max) : header_bytes_max_(header_bytes_max) {}
BodyHashes::~BodyHashes() = default;

void BodyHashes::Update(std::string_view bytes) {
  if (given_up_ || finished_ || bytes.empty()) {
    return;
  }
  if (in_body_) {
    for (Slot& slot : slots_) {
      slot.hasher->Update(bytes);
    }
    return;
  }
  const size_t searched = header_.size() >= 3 ? header_.size() - 3 : 0;
  header_.append(bytes);
  size_t header_end = std::string::npos;
  if (header_.starts_with("\r\n")) {
    header_end = 2;  // No header at all.
  } else if (const size_t blank = header_.find("\r\n\r\n", searched); blank != std::string::npos) {
    header_end = blank + 4;
  }
  if (header_end != std::string::npos) {
    StartBody(header_end);
  } else if (header_.size() > header_bytes_max_) {
    given_up_ = true;
    std::string().swap(header_);
  }
}

void BodyHashes::StartBody(size_t header_end) {
  in_body_ = true;
  size_t body_offset = 0;
  for (const HeaderField& field :
       SplitHeader(std::string_view(header_).substr(0, header_end), body_offset)) {
    if (!EqualsIgnoreCase(TrimFws(field.name), "DKIM-Signature")) {
      continue;
    }
    const std::optional<std::map<std::string, std::string>> tags =
        ParseTags(field.raw.substr(field.raw.find(':') + 1));
    if (!tags) {
      continue;  // Verification calls it neutral; no hash needed.
    }
    Canonicalization c = Canonicalization::kSimple;
    if (const auto it = tags->find("c"); it != tags->end()) {
      const std::string v = AsciiStrToLower(it->second);
      const size_t slash = v.find('/');
      c = slash != std::string::npos && v.substr(slash + 1) == "relaxed"
              ? Canonicalization::kRelaxed
              : Canonicalization::kSimple;
    }
    std::optional<uint64_t> limit;
    if (const auto it = tags->find("l"); it != tags->end()) {
      uint64_t n = 0;
      if (!Number(it->second, n)) {
        continue;
      }
      limit = n;
    }
    if (std::none_of(slots_.begin(), slots_.end(),
                     [&](const Slot& s) { return s.canonicalization == c && s.limit == limit; })) {
      slots_.push_back({c, limit, std::make_unique<BodyHasher>(c, limit), {}});
    }
  }
  const std::string_view body = std::string_view(header_).substr(header_end);
  for (Slot& slot : slots_) {
    slot.hasher->Update(body);
  }
  std::string().swap(header_);
}

void BodyHashes::Finish() {
  if (finished_ || given_up_) {
    finished_ = true;
    return;
  }
  if (!in_body_) {
    StartBody(header_.size());  // A message that is all header has an empty body.
  }
  for (Slot& slot : slots_) {
    slot.hash.digest = slot.hasher->Finish();
    slot.hash.canonical_bytes = slot.hasher->canonical_bytes();
    slot.hasher.reset();
  }
  finished_ = true;
}

const BodyHashes::Hash* BodyHashes::Find(Canonicalization c, std::optional<uint64_t> limit) const {
  if (!finished_) {
    return nullptr;
  }
  for (const Slot& slot : slots_) {
    if (slot.canonicalization == c && slot.limit == limit) {
      return &slot.hash;
    }
  }
  return nullptr;
}

absl::StatusOr<const tls::PublicKey*> KeyCache::Get(tls::KeyType type, std::string_view p) {
  std::string name(1, type == tls::KeyType::kRsa ? 'r' : 'e');
  name.append(p);
  if (const auto it = keys_.find(name); it != keys_.end()) {
    ++hits_;
    return &it->second;
  }
  const std::optional<std::string> der = tls::Base64Decode(p);
  if (!der) {
    return absl::InvalidArgumentError("p= is not base64");
  }
  absl::StatusOr<tls::PublicKey> key = tls::PublicKey::Parse(type, *der);
  if (!key.ok()) {
    return key.status();
  }
  if (keys_.size() >= entries_max_) {
    keys_.clear();  // Rare: more distinct keys than the bound (always, with a bound of 0).
  }
  return &keys_.insert_or_assign(std::move(name), std::move(*key)).first->second;
}

Verification::Verification(std::string_view message, uint64_t now_unix_seconds)
    : message_(message), now_(now_unix_seconds) {
  header_ = SplitHeader(message_, body_offset_);
}

void Verification::Provide(const dns::Question& question, dns::Answer answer) {
  answers_[dns::QuestionKey(question.name)] = std::move(answer);
}

bool Verification::Run() {
  // Answers never change within a verification, so a signature decided in an earlier Run
  // keeps its result: only the undecided ones are looked at again.
  size_t index = 0;
  for (const HeaderField& field : header_) {
    if (!EqualsIgnoreCase(TrimFws(field.name), "DKIM-Signature")) {
      continue;
    }
    if (index++ < results_.size()) {
      continue;
    }
    bool need = false;
    SignatureResult r = VerifyOne(field, need);
    if (need) {
      return false;
    }
    results_.push_back(std::move(r));
  }
  return true;
}

SignatureResult Verification::VerifyOne(const HeaderField& signature, bool& need) {
  SignatureResult r;
  auto result = [&](Result res, std::string reason) {
    r.result = res;
    r.reason = std::move(reason);
    return r;
  };
  const size_t colon = signature.raw.find(':');
  const std::optional<std::map<std::string, std::string>> parsed =
      ParseTags(signature.raw.substr(colon + 1));
  if (!parsed) {
    return result(Result::kNeutral, "signature syntax error");
  }
  const std::map<std::string, std::string>& tags = *parsed;
  auto tag = [&](const char* name) -> const std::string* {
    const auto it = tags.find(name);
    return it == tags.end() ? nullptr : &it->second;
  };
  if (const std::string* d = tag("d")) {
    r.domain = AsciiStrToLower(*d);
  }
  if (const std::string* s = tag("s")) {
    r.selector = AsciiStrToLower(*s);
  }
  for (const char* required : {"v", "a", "b", "bh", "d", "h", "s"}) {
    if (tag(required) == nullptr) {
      return result(Result::kNeutral, StrCat("signature lacks ", required, "="));
    }
  }
  if (*tag("v") != "1") {
    return result(Result::kNeutral, StrCat("unknown signature version v=", *tag("v")));
  }
  const std::string algorithm = AsciiStrToLower(*tag("a"));
  tls::KeyType key_type = tls::KeyType::kRsa;
  if (algorithm == "rsa-sha1") {
    return result(Result::kFail, "rsa-sha1 is not accepted (RFC 8301)");
  }
  if (algorithm == "ed25519-sha256") {
    key_type = tls::KeyType::kEd25519;
  } else if (algorithm != "rsa-sha256") {
    return result(Result::kNeutral, StrCat("unknown algorithm a=", algorithm));
  }
  Canonicalization hc = Canonicalization::kSimple;
  Canonicalization bc = Canonicalization::kSimple;
  if (const std::string* c = tag("c")) {
    const std::string v = AsciiStrToLower(*c);
    const size_t slash = v.find('/');
    const std::string h = v.substr(0, slash);
    const std::string b = slash == std::string::npos ? "simple" : v.substr(slash + 1);
    if ((h != "simple" && h != "relaxed") || (b != "simple" && b != "relaxed")) {
      return result(Result::kNeutral, StrCat("unknown canonicalization c=", *c));
    }
    hc = h == "relaxed" ? Canonicalization::kRelaxed : Canonicalization::kSimple;
    bc = b == "relaxed" ? Canonicalization::kRelaxed : Canonicalization::kSimple;
  }
  const std::vector<std::string> signed_names = SplitColons(*tag("h"));
  if (std::none_of(signed_names.begin(), signed_names.end(),
                   [](const std::string& n) { return EqualsIgnoreCase(n, "from"); })) {
    return result(Result::kNeutral, "From is not signed (h= lacks from)");
  }
  std::string identity_domain = r.domain;
  if (const std::string* i = tag("i")) {
    const size_t at = i->rfind('@');
    if (at == std::string::npos) {
      return result(Result::kNeutral, "i= is not an identity");
    }
    identity_domain = AsciiStrToLower(i->substr(at + 1));
    if (identity_domain != r.domain && !identity_domain.ends_with(StrCat(".", r.domain))) {
      return result(Result::kNeutral, "i= is not within d=");
    }
  }
  std::optional<uint64_t> limit;
  if (const std::string* l = tag("l")) {
    uint64_t n = 0;
    if (!Number(*l, n)) {
      return result(Result::kNeutral, "bad l=");
    }
    limit = n;
  }
  uint64_t t = 0, x = 0;
  if (tag("t") != nullptr && !Number(*tag("t"), t)) {
    return result(Result::kNeutral, "bad t=");
  }
  if (tag("x") != nullptr) {
    if (!Number(*tag("x"), x) || (tag("t") != nullptr && x < t)) {
      return result(Result::kNeutral, "bad x=");
    }
    if (x < now_) {
      return result(Result::kFail, "signature expired (x=)");
    }
  }
  if (const std::string* q = tag("q")) {
    const std::vector<std::string> methods = SplitColons(*q);
    if (std::none_of(methods.begin(), methods.end(),
                     [](const std::string& m) { return EqualsIgnoreCase(m, "dns/txt"); })) {
      return result(Result::kNeutral, StrCat("unknown query method q=", *q));
    }
  }
  const std::optional<std::string> body_hash = tls::Base64Decode(*tag("bh"));
  const std::optional<std::string> signature_bytes = tls::Base64Decode(*tag("b"));
  if (!body_hash || !signature_bytes) {
    return result(Result::kNeutral, "bh= or b= is not base64");
  }

  // The key (3.6.2).
  const std::string key_name = dns::QuestionKey(StrCat(r.selector, "._domainkey.", r.domain));
  const auto found = answers_.find(key_name);
  if (found == answers_.end()) {
    need = true;
    needed_ = {key_name, dns::RecordType::kTxt};
    return r;
  }
  const dns::Answer& answer = found->second;
  if (answer.status == dns::AnswerStatus::kTemporary) {
    return result(Result::kTempError, StrCat("DNS failure looking up ", key_name));
  }
  if (answer.status != dns::AnswerStatus::kOk) {
    return result(Result::kPermError, StrCat("no key at ", key_name));
  }
  std::optional<std::map<std::string, std::string>> key_tags;
  std::string key_problem = "no usable key record";
  for (const std::string& text : answer.texts) {
    std::optional<std::map<std::string, std::string>> k = ParseTags(text);
    if (!k) {
      key_problem = "key record syntax error";
      continue;
    }
    const auto v = k->find("v");
    if ((v != k->end() && v->second != "DKIM1") || text.find("p=") == std::string::npos) {
      key_problem = "key record is not DKIM1 or has no p=";
      continue;
    }
    key_tags = std::move(k);
    break;
  }
  if (!key_tags) {
    return result(Result::kPermError, StrCat(key_problem, " at ", key_name));
  }
  const std::string p = StripFws((*key_tags)["p"]);
  if (p.empty()) {
    return result(Result::kPermError, "key revoked (empty p=)");
  }
  const std::string k = key_tags->contains("k") ? AsciiStrToLower((*key_tags)["k"]) : "rsa";
  if ((k == "rsa") != (key_type == tls::KeyType::kRsa) || (k != "rsa" && k != "ed25519")) {
    return result(Result::kPermError, StrCat("key type k=", k, " does not fit a=", algorithm));
  }
  if (key_tags->contains("h")) {
    const std::vector<std::string> hashes = SplitColons((*key_tags)["h"]);
    if (std::none_of(hashes.begin(), hashes.end(),
                     [](const std::string& h) { return EqualsIgnoreCase(h, "sha256"); })) {
      return result(Result::kPermError, "key does not allow sha256 (h=)");
    }
  }
  if (key_tags->contains("s")) {
    const std::vector<std::string> services = SplitColons((*key_tags)["s"]);
    if (std::none_of(services.begin(), services.end(), [](const std::string& s) {
          return s == "*" || EqualsIgnoreCase(s, "email");
        })) {
      return result(Result::kPermError, "key is not for email (s=)");
    }
  }
  if (key_tags->contains("t")) {
    for (const std::string& flag : SplitColons((*key_tags)["t"])) {
      if (flag == "y") {
        r.testing = true;
      } else if (flag == "s" && identity_domain != r.domain) {
        return result(Result::kFail, "key requires i= in d= itself (t=s)");
      }
    }
  }
  KeyCache uncached(0);
  absl::StatusOr<const tls::PublicKey*> key =
      (key_cache_ != nullptr ? *key_cache_ : uncached).Get(key_type, p);
  if (!key.ok()) {
    return result(Result::kPermError, StrCat("key: ", key.status().message()));
  }
  if (key_type == tls::KeyType::kRsa && (*key)->bits() < 1024) {
    return result(Result::kFail,
                  StrCat("RSA key of ", (*key)->bits(), " bits (under 1024, RFC 8301)"));
  }

  // The body hash (3.7): computed as the message arrived, or here.
  BodyHashes::Hash computed;
  const BodyHashes::Hash* hash = body_hashes_ == nullptr ? nullptr : body_hashes_->Find(bc, limit);
  if (hash == nullptr) {
    BodyHasher hasher(bc, limit);
    hasher.Update(message_.substr(body_offset_));
    computed.digest = hasher.Finish();
    computed.canonical_bytes = hasher.canonical_bytes();
    hash = &computed;
  }
  const tls::Sha256Digest& digest = hash->digest;
  if (limit && *limit > hash->canonical_bytes) {
    return result(Result::kFail, "l= is longer than the body");
  }
  if (std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()) != *body_hash) {
    return result(Result::kFail, "body hash mismatch");
  }
  // The header hash and the signature.
  const std::string data = SignedHeaderData(header_, signed_names, signature.raw, hc);
  bool ok = false;
  if (key_type == tls::KeyType::kRsa) {
    ok = (*key)->Verify(data, *signature_bytes);
  } else {
    const tls::Sha256Digest h = tls::Sha256(data);  // RFC 8463: Ed25519 over the hash.
    ok = (*key)->Verify(std::string_view(reinterpret_cast<const char*>(h.data()), h.size()),
                        *signature_bytes);
  }
  if (!ok) {
    return result(Result::kFail, "signature does not verify");
  }
  r.result = Result::kPass;
  r.reason.clear();
  return r;
}

absl::StatusOr<std::string> Sign(std::string_view message, const SignOptions& options,
                                 const tls::PrivateKey& key) {
  size_t body_offset = 0;
  const std::vector<HeaderField> header = SplitHeader(message, body_offset);
  auto count = [&](std::string_view name) {
    return std::count_if(header.begin(), header.end(), [&](const HeaderField& f) {
      return EqualsIgnoreCase(TrimFws(f.name), name);
    });
  };
  if (count("from") == 0) {
    return absl::InvalidArgumentError("the message has no From: field");
  }
  if (!message.empty() && IsWsp(message.front())) {
    // Its first line would fold into the field put on top of it (found by the fuzzer).
    return absl::InvalidArgumentError(
        "the message starts with a folded line, not with a header field");
  }
  if (key.type() == tls::KeyType::kRsa && key.bits() < 1024) {
    return absl::InvalidArgumentError(
        StrCat("an RSA key of ", key.bits(), " bits is too small (RFC 8301: at least 1024)"));
  }
  if (options.domain.empty() || options.selector.empty()) {
    return absl::InvalidArgumentError("a domain and a selector are required");
  }
  // h=: every instance of each listed field present, From once more (oversigning).
  std::vector<std::string> names;
  std::vector<std::string> seen;
  std::vector<std::string> wanted = options.headers;
  if (std::none_of(wanted.begin(), wanted.end(),
                   [](const std::string& n) { return EqualsIgnoreCase(n, "from"); })) {
    wanted.insert(wanted.begin(), "from");
  }
  for (const std::string& n : wanted) {
    const std::string name = AsciiStrToLower(n);
    if (name.empty() || std::find(seen.begin(), seen.end(), name) != seen.end()) {
      continue;
    }
    seen.push_back(name);
    const auto present = count(name) + (name == "from" ? 1 : 0);
    for (ptrdiff_t i = 0; i < present; ++i) {
      names.push_back(name);
    }
  }
  BodyHasher hasher(options.body_canonicalization);
  hasher.Update(message.substr(body_offset));
  const tls::Sha256Digest digest = hasher.Finish();
  const std::string bh =
      tls::Base64Encode(std::string_view(reinterpret_cast<const char*>(digest.data()), 32));
  const bool ed25519 = key.type() == tls::KeyType::kEd25519;
  auto canon = [](Canonicalization c) {
    return c == Canonicalization::kRelaxed ? "relaxed" : "simple";
  };
  // Lines are folded before 78 columns; folding whitespace is part of what is signed.
  std::string field = StrCat("DKIM-Signature: v=1; a=", ed25519 ? "ed25519-sha256" : "rsa-sha256",
                             "; c=", canon(options.header_canonicalization), "/",
                             canon(options.body_canonicalization), "; d=", options.domain,
                             "; s=", options.selector, ";");
  if (options.timestamp != 0) {
    StrAppend(&field, "\r\n\tt=", options.timestamp, ";");
  }
  field.append("\r\n\th=");
  size_t column = 3;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string item = StrCat(names[i], i + 1 < names.size() ? ":" : ";");
    if (column + item.size() > 72) {
      field.append("\r\n\t ");
      column = 2;
    }
    field.append(item);
    column += item.size();
  }
  StrAppend(&field, "\r\n\tbh=", bh, ";\r\n\tb=");
  const std::string data = SignedHeaderData(header, names, field, options.header_canonicalization);
  absl::StatusOr<std::string> signature;
  if (ed25519) {
    const tls::Sha256Digest h = tls::Sha256(data);
    signature = key.Sign(std::string_view(reinterpret_cast<const char*>(h.data()), h.size()));
  } else {
    signature = key.Sign(data);
  }
  if (!signature.ok()) {
    return signature.status();
  }
  const std::string b = tls::Base64Encode(*signature);
  for (size_t i = 0; i < b.size(); i += 70) {
    if (i != 0) {
      field.append("\r\n\t ");
    }
    field.append(b, i, 70);
  }
  field.append("\r\n");
  return field;
}

}  // namespace relais::dkim
