// protocols/dkim/dkim.cc — see dkim.h. Section numbers are RFC 6376's.
#include "protocols/dkim/dkim.h"

#include <algorithm>
#include <cctype>
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

std::string_view TrimFws(std::string_view s) { return base::Trim(s, base::IsFwsChar); }

std::string StripFws(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (!base::IsFwsChar(c)) {
      out.push_back(c);
    }
  }
  return out;
}

// 3.2 tag-list: "a=1; b=2". nullopt on a malformed list or a repeated tag.
std::optional<std::map<std::string, std::string>> ParseTags(std::string_view list) {
  std::map<std::string, std::string> tags;
  for (std::string_view spec : base::Split(list, ';')) {
    spec = TrimFws(spec);
    if (spec.empty()) {
      continue;  // An empty tag-spec (a trailing ';' is allowed).
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
  for (std::string_view part : base::Split(text, ':')) {
    out.emplace_back(TrimFws(part));
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
// `index` is IndexFields(header): each name is found in O(1), whatever h= lists.
std::string SignedHeaderData(const std::vector<HeaderField>& header, const FieldIndex& index,
                             const std::vector<std::string>& names, std::string_view signature_raw,
                             Canonicalization c) {
  std::string data;
  // Instances of each name used so far: the last unused one is taken, counting from the
  // bottom (5.4.2); a name listed more often than it appears signs nothing more.
  std::unordered_map<std::string, uint32_t> used;
  for (const std::string& name : names) {
    const auto it = index.find(AsciiStrToLower(name));
    if (it == index.end()) {
      continue;
    }
    uint32_t& n = used[it->first];
    if (n < it->second.size()) {
      data.append(CanonicalHeader(header[it->second[it->second.size() - 1 - n]].raw, c));
      ++n;
    }
  }
  std::string self = CanonicalHeader(WithoutSignatureValue(signature_raw), c);
  if (self.ends_with("\r\n")) {
    self.resize(self.size() - 2);
  }
  data.append(self);
  return data;
}

// A domain name as DNS can ask for it (RFC 6376 3.5 d=, s=): dot-separated labels of letters,
// digits, '-' and '_', or UTF-8 (IDN); at most 253 octets, labels of at most 63. Whatever else
// a signature holds there is never looked up nor written into Authentication-Results.
bool IsDomainName(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  size_t label = 0;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
      continue;
    }
    if (!(std::isalnum(u) || c == '-' || c == '_' || u >= 0x80) || ++label > 63) {
      return false;
    }
  }
  return label > 0;
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
      if (end >= message.size() || !base::IsWsp(message[end])) {
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
    if (base::IsWsp(ch)) {
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
    : canonicalization_(c), limited_(limit.has_value()) {
  if (limit) {
    cuts_.push_back(*limit);
    cut_digests_.resize(1);
  }
}

BodyHasher::BodyHasher(Canonicalization c, std::vector<uint64_t> cuts)
    : canonicalization_(c), limited_(false), cuts_(std::move(cuts)) {
  std::sort(cuts_.begin(), cuts_.end());
  cuts_.erase(std::unique(cuts_.begin(), cuts_.end()), cuts_.end());
  cut_digests_.resize(cuts_.size());
}

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
  // Cuts reached within these bytes: hash up to each, and keep the state's digest there.
  while (next_cut_ < cuts_.size() && cuts_[next_cut_] - hashed_ <= bytes.size()) {
    const size_t n = static_cast<size_t>(cuts_[next_cut_] - hashed_);
    Hash(bytes.substr(0, n));
    bytes.remove_prefix(n);
    Snapshot(next_cut_++);
  }
  if (limited_ && next_cut_ == cuts_.size()) {
    return;  // Past l=: nothing more is hashed.
  }
  Hash(bytes);
}

void BodyHasher::Hash(std::string_view bytes) {
  hashed_ += bytes.size();
  // Gathered and hashed in blocks: one SHA-256 update per line would cost more than the hash.
  pending_.append(bytes);
  if (pending_.size() >= kPendingBytes) {
    sha_.Update(pending_);
    pending_.clear();
  }
}

void BodyHasher::Snapshot(size_t cut_index) {
  sha_.Update(pending_);
  pending_.clear();
  crypto::Sha256Stream copy;
  copy.CopyFrom(sha_);
  cut_digests_[cut_index] = copy.Finish();
}

crypto::Sha256Digest BodyHasher::Finish() {
  if (!line_.empty()) {
    Line(line_);  // A last line without CRLF gets one.
    line_.clear();
  }
  if (!any_ && canonicalization_ == Canonicalization::kSimple) {
    Emit("\r\n");  // 3.4.3: an empty body is one CRLF.
  }
  sha_.Update(pending_);
  pending_.clear();
  whole_ = sha_.Finish();
  // Cuts past the end of the body: their prefix is the whole body.
  for (; next_cut_ < cuts_.size(); ++next_cut_) {
    cut_digests_[next_cut_] = whole_;
  }
  return limited_ ? cut_digests_[0] : whole_;
}

const crypto::Sha256Digest* BodyHasher::Cut(uint64_t cut) const {
  const auto it = std::lower_bound(cuts_.begin(), cuts_.end(), cut);
  if (it == cuts_.end() || *it != cut) {
    return nullptr;
  }
  return &cut_digests_[static_cast<size_t>(it - cuts_.begin())];
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
    auto slot = std::find_if(slots_.begin(), slots_.end(),
                             [&](const Slot& s) { return s.canonicalization == c; });
    if (slot == slots_.end()) {
      slots_.push_back({c, false, {}, nullptr});
      slot = slots_.end() - 1;
    }
    if (limit) {
      slot->limits.push_back(*limit);
    } else {
      slot->whole = true;
    }
  }
  for (Slot& slot : slots_) {
    slot.hasher = std::make_unique<BodyHasher>(slot.canonicalization, slot.limits);
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
    (void)slot.hasher->Finish();
  }
  finished_ = true;
}

std::optional<BodyHashes::Hash> BodyHashes::Find(Canonicalization c,
                                                 std::optional<uint64_t> limit) const {
  if (!finished_) {
    return std::nullopt;
  }
  for (const Slot& slot : slots_) {
    if (slot.canonicalization != c || slot.hasher == nullptr) {
      continue;
    }
    if (!limit && !slot.whole) {
      return std::nullopt;
    }
    const crypto::Sha256Digest* digest = limit ? slot.hasher->Cut(*limit) : nullptr;
    if (limit && digest == nullptr) {
      return std::nullopt;
    }
    Hash h;
    h.canonical_bytes = slot.hasher->canonical_bytes();
    if (digest != nullptr) {
      h.digest = *digest;
    } else {
      // The whole body: Finish() kept it.
      h.digest = slot.hasher->Whole();
    }
    return h;
  }
  return std::nullopt;
}

absl::StatusOr<const crypto::PublicKey*> KeyCache::Get(crypto::KeyType type, std::string_view p) {
  std::string name(1, type == crypto::KeyType::kRsa ? 'r' : 'e');
  name.append(p);
  if (const auto it = keys_.find(name); it != keys_.end()) {
    ++hits_;
    return &it->second;
  }
  const std::optional<std::string> der = crypto::Base64Decode(p);
  if (!der) {
    return absl::InvalidArgumentError("p= is not base64");
  }
  absl::StatusOr<crypto::PublicKey> key = crypto::PublicKey::Parse(type, *der);
  if (!key.ok()) {
    return key.status();
  }
  if (keys_.size() >= entries_max_) {
    keys_.clear();  // Rare: more distinct keys than the bound (always, with a bound of 0).
  }
  return &keys_.insert_or_assign(std::move(name), std::move(*key)).first->second;
}

FieldIndex IndexFields(const std::vector<HeaderField>& header) {
  FieldIndex index;
  for (size_t i = 0; i < header.size(); ++i) {
    index[AsciiStrToLower(TrimFws(header[i].name))].push_back(static_cast<uint32_t>(i));
  }
  return index;
}

Verification::Verification(std::string_view message, uint64_t now_unix_seconds)
    : message_(message), now_(now_unix_seconds) {
  header_ = SplitHeader(message_, body_offset_);
  index_ = IndexFields(header_);
  if (const auto it = index_.find("from"); it != index_.end()) {
    from_fields_ = it->second.size();
  }
}

Verification::~Verification() = default;

void Verification::Provide(const dns::Question& question, dns::Answer answer) {
  answers_[dns::QuestionKey(question.name)] = std::move(answer);
}

void Verification::Select() {
  selected_ = true;
  const auto it = index_.find("dkim-signature");
  if (it == index_.end()) {
    return;
  }
  const std::vector<uint32_t>& all = it->second;
  // 6.1: the preferred domain's signatures first, then the others, in header order, up to
  // the bound. Only d= is read here; a signature without a usable one is not preferred.
  std::vector<uint32_t> first, rest;
  for (uint32_t i : all) {
    bool preferred = false;
    if (limits_.preferred) {
      const std::string_view raw = header_[i].raw;
      const std::optional<std::map<std::string, std::string>> tags =
          ParseTags(raw.substr(raw.find(':') + 1));
      if (tags) {
        const auto d = tags->find("d");
        preferred = d != tags->end() && IsDomainName(d->second) &&
                    limits_.preferred(AsciiStrToLower(d->second));
      }
    }
    (preferred ? first : rest).push_back(i);
  }
  first.insert(first.end(), rest.begin(), rest.end());
  if (first.size() > limits_.signatures_max) {
    skipped_ = first.size() - limits_.signatures_max;
    first.resize(limits_.signatures_max);
  }
  std::sort(first.begin(), first.end());  // Results are reported topmost first.
  signatures_ = std::move(first);
  decided_.resize(signatures_.size());
}

bool Verification::Run() {
  if (!selected_) {
    Select();
  }
  // Answers never change within a verification, so a signature decided in an earlier Run
  // keeps its result: only the undecided ones are looked at again. Every key still missing is
  // named, so that the lookups run at once.
  pending_.clear();
  for (size_t k = 0; k < signatures_.size(); ++k) {
    if (decided_[k]) {
      continue;
    }
    bool need = false;
    SignatureResult r = VerifyOne(header_[signatures_[k]], need);
    if (need) {
      if (std::none_of(pending_.begin(), pending_.end(),
                       [&](const dns::Question& q) { return q.name == needed_.name; })) {
        pending_.push_back(needed_);
      }
      continue;
    }
    decided_[k] = std::move(r);
  }
  if (!pending_.empty()) {
    needed_ = pending_.front();
    return false;
  }
  Collect();
  return true;
}

void Verification::GiveUp() {
  if (!selected_) {
    Select();
  }
  for (size_t k = 0; k < signatures_.size(); ++k) {
    if (!decided_[k]) {
      SignatureResult r;
      // The domain and selector, for the record, as far as the signature gives them.
      const std::string_view raw = header_[signatures_[k]].raw;
      if (const auto tags = ParseTags(raw.substr(raw.find(':') + 1))) {
        if (const auto d = tags->find("d"); d != tags->end() && IsDomainName(d->second)) {
          r.domain = AsciiStrToLower(d->second);
        }
        if (const auto s = tags->find("s"); s != tags->end() && IsDomainName(s->second)) {
          r.selector = AsciiStrToLower(s->second);
        }
      }
      r.result = Result::kTempError;
      r.reason = "key lookup not done within the check's budget";
      decided_[k] = std::move(r);
    }
  }
  pending_.clear();
  Collect();
}

void Verification::Collect() {
  results_.clear();
  results_.reserve(decided_.size());
  for (const std::optional<SignatureResult>& r : decided_) {
    results_.push_back(*r);
  }
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
  for (const char* required : {"v", "a", "b", "bh", "d", "h", "s"}) {
    if (tag(required) == nullptr) {
      return result(Result::kNeutral, StrCat("signature lacks ", required, "="));
    }
  }
  // d= and s= name a DNS question and go into Authentication-Results: only domain names.
  if (!IsDomainName(*tag("d")) || !IsDomainName(*tag("s"))) {
    return result(Result::kNeutral, "d= or s= is not a domain name");
  }
  r.domain = AsciiStrToLower(*tag("d"));
  r.selector = AsciiStrToLower(*tag("s"));
  if (*tag("v") != "1") {
    return result(Result::kNeutral, StrCat("unknown signature version v=", *tag("v")));
  }
  const std::string algorithm = AsciiStrToLower(*tag("a"));
  crypto::KeyType key_type = crypto::KeyType::kRsa;
  if (algorithm == "rsa-sha1") {
    return result(Result::kFail, "rsa-sha1 is not accepted (RFC 8301)");
  }
  if (algorithm == "ed25519-sha256") {
    key_type = crypto::KeyType::kEd25519;
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
  const std::optional<std::string> body_hash = crypto::Base64Decode(*tag("bh"));
  const std::optional<std::string> signature_bytes = crypto::Base64Decode(*tag("b"));
  if (!body_hash || !signature_bytes) {
    return result(Result::kNeutral, "bh= or b= is not base64");
  }
  if (from_fields_ > 1) {
    // RFC 5322 3.6 allows one From field. With two, a signature over one of them says
    // nothing about the one a reader sees (8.15): no pass for anyone, and no lookup.
    return result(Result::kPolicy, "more than one From field (RFC 6376 8.15)");
  }

  // The key (3.6.2).
  const std::string key_name = dns::QuestionKey(StrCat(r.selector, "._domainkey.", r.domain));
  if (!IsDomainName(key_name)) {
    // d= and s= are each names, but together longer than DNS allows (253 octets): no key can
    // exist there, so the signature fails for good. Asking would fail locally and read as a
    // temporary error, which a forger could use to turn a DMARC fail into a deferral.
    return result(Result::kPermError, "key name longer than DNS allows");
  }
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
    // 3.2: whitespace around '=' is allowed here as in signatures ("p = ...").
    const auto v = k->find("v");
    if ((v != k->end() && v->second != "DKIM1") || !k->contains("p")) {
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
  if ((k == "rsa") != (key_type == crypto::KeyType::kRsa) || (k != "rsa" && k != "ed25519")) {
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
  absl::StatusOr<const crypto::PublicKey*> key =
      (key_cache_ != nullptr ? *key_cache_ : uncached).Get(key_type, p);
  if (!key.ok()) {
    return result(Result::kPermError, StrCat("key: ", key.status().message()));
  }
  if (key_type == crypto::KeyType::kRsa && (*key)->bits() < 1024) {
    return result(Result::kFail,
                  StrCat("RSA key of ", (*key)->bits(), " bits (under 1024, RFC 8301)"));
  }

  // The body hash (3.7): computed as the message arrived, or here.
  std::optional<BodyHashes::Hash> hash;
  if (body_hashes_ != nullptr) {
    hash = body_hashes_->Find(bc, limit);
  }
  if (!hash) {
    // Hashed here, once for every signature of the message (one pass whatever their l=).
    if (own_hashes_ == nullptr) {
      own_hashes_ = std::make_unique<BodyHashes>(~size_t{0});
      own_hashes_->Update(message_);
      own_hashes_->Finish();
    }
    hash = own_hashes_->Find(bc, limit);
  }
  if (!hash) {
    return result(Result::kTempError, "body hash not computed");  // Not reached.
  }
  const crypto::Sha256Digest& digest = hash->digest;
  if (limit && *limit > hash->canonical_bytes) {
    return result(Result::kFail, "l= is longer than the body");
  }
  if (std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()) != *body_hash) {
    return result(Result::kFail, "body hash mismatch");
  }
  // The header hash and the signature.
  const std::string data = SignedHeaderData(header_, index_, signed_names, signature.raw, hc);
  bool ok = false;
  if (key_type == crypto::KeyType::kRsa) {
    ok = (*key)->Verify(data, *signature_bytes);
  } else {
    const crypto::Sha256Digest h = crypto::Sha256(data);  // RFC 8463: Ed25519 over the hash.
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
                                 const crypto::PrivateKey& key) {
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
  if (!message.empty() && base::IsWsp(message.front())) {
    // Its first line would fold into the field put on top of it (found by the fuzzer).
    return absl::InvalidArgumentError(
        "the message starts with a folded line, not with a header field");
  }
  if (key.type() == crypto::KeyType::kRsa && key.bits() < 1024) {
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
  const crypto::Sha256Digest digest = hasher.Finish();
  const std::string bh =
      crypto::Base64Encode(std::string_view(reinterpret_cast<const char*>(digest.data()), 32));
  const bool ed25519 = key.type() == crypto::KeyType::kEd25519;
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
  const std::string data =
      SignedHeaderData(header, IndexFields(header), names, field, options.header_canonicalization);
  absl::StatusOr<std::string> signature;
  if (ed25519) {
    const crypto::Sha256Digest h = crypto::Sha256(data);
    signature = key.Sign(std::string_view(reinterpret_cast<const char*>(h.data()), h.size()));
  } else {
    signature = key.Sign(data);
  }
  if (!signature.ok()) {
    return signature.status();
  }
  const std::string b = crypto::Base64Encode(*signature);
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
