#include "core/config/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#define TOML_EXCEPTIONS 0
#define TOML_HEADER_ONLY 1
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>

#include "core/base/strings.h"

namespace relais::config {

using base::StrAppend;
using base::StrCat;

struct Entry::Impl {
  const toml::table& table;
  std::string_view source;
  std::string_view prefix;  // The array's name, e.g. "routes".
};

namespace {

std::string Where(std::string_view source, const toml::node& node) {
  return StrCat(source, ":", static_cast<uint32_t>(node.source().begin.line));
}

absl::Status KeyError(std::string_view source, const toml::node& node, std::string_view key,
                      std::string_view what) {
  return absl::InvalidArgumentError(StrCat(Where(source, node), ": ", key, ": ", what));
}

// The words of a choice as errors list them: "off,tag,reject".
std::string Allowed(std::span<const std::string_view> words) {
  std::string out;
  for (std::string_view w : words) {
    StrAppend(&out, out.empty() ? "" : ",", w);
  }
  return out;
}

// A string `node` that must be one of `words`: its index, or the error naming `name`.
absl::StatusOr<size_t> ChooseWord(std::string_view source, const toml::node& node,
                                  std::string_view name, std::span<const std::string_view> words) {
  auto v = node.value<std::string>();
  if (!node.is_string() || !v) {
    return KeyError(source, node, name, "expected a string");
  }
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i] == *v) {
      return i;
    }
  }
  return KeyError(source, node, name, StrCat("'", *v, "' is not one of ", Allowed(words)));
}

// Reads `node` into the member `slot` points at, checking `key`'s bounds.
absl::Status ApplyKey(const internal::KeyInfo& key, const toml::node& node, std::string_view source,
                      Slot& slot) {
  const std::string name = StrCat(key.table, ".", key.name);
  const uint64_t min = key.bounds.min;
  const uint64_t max = key.bounds.max;
  if (std::holds_alternative<uint32_t*>(slot) || std::holds_alternative<uint64_t*>(slot)) {
    auto v = node.value<int64_t>();
    if (!node.is_integer() || !v) {
      return KeyError(source, node, name, "expected an integer");
    }
    if (*v < 0 || static_cast<uint64_t>(*v) < min || static_cast<uint64_t>(*v) > max) {
      return KeyError(source, node, name, StrCat(*v, " is out of range [", min, ", ", max, "]"));
    }
    if (uint32_t** u32 = std::get_if<uint32_t*>(&slot)) {
      **u32 = static_cast<uint32_t>(*v);
    } else {
      *std::get<uint64_t*>(slot) = static_cast<uint64_t>(*v);
    }
    return absl::OkStatus();
  }
  if (std::string** field = std::get_if<std::string*>(&slot)) {
    auto v = node.value<std::string>();
    if (!node.is_string() || !v) {
      return KeyError(source, node, name, "expected a string");
    }
    if (v->size() < min || v->size() > max) {
      return KeyError(source, node, name, StrCat("length must be in [", min, ", ", max, "]"));
    }
    **field = *v;
    return absl::OkStatus();
  }
  if (bool** field = std::get_if<bool*>(&slot)) {
    auto v = node.value<bool>();
    if (!node.is_boolean() || !v) {
      return KeyError(source, node, name, "expected true or false");
    }
    **field = *v;
    return absl::OkStatus();
  }
  if (ChoiceSlot* choice = std::get_if<ChoiceSlot>(&slot)) {
    absl::StatusOr<size_t> index = ChooseWord(source, node, name, choice->words);
    if (!index.ok()) {
      return index.status();
    }
    choice->set(*index);
    return absl::OkStatus();
  }
  // Arrays of strings or of networks.
  const bool networks = std::holds_alternative<std::vector<mail::IpNetwork>*>(slot);
  const toml::array* array = node.as_array();
  if (array == nullptr) {
    return KeyError(source, node, name, "expected an array of strings");
  }
  if (array->size() < min || array->size() > max) {
    return KeyError(source, node, name,
                    StrCat("must have between ", min, " and ", max, " entries"));
  }
  std::vector<std::string> strings;
  std::vector<mail::IpNetwork> parsed;
  for (const toml::node& element : *array) {
    auto v = element.value<std::string>();
    if (!element.is_string() || !v) {
      return KeyError(source, element, name, "expected an array of strings");
    }
    if (networks) {
      auto net = mail::IpNetwork::Parse(*v);
      if (!net) {
        return KeyError(source, element, name, StrCat("'", *v, "' is not a CIDR network"));
      }
      parsed.push_back(*net);
    } else {
      if (key.domain_patterns && !ValidDomainPattern(*v)) {
        return KeyError(source, element, name, StrCat("'", *v, "' is not a domain, *.domain or *"));
      }
      strings.push_back(base::AsciiStrToLower(*v));
    }
  }
  if (networks) {
    *std::get<std::vector<mail::IpNetwork>*>(slot) = std::move(parsed);
  } else {
    *std::get<std::vector<std::string>*>(slot) = std::move(strings);
  }
  return absl::OkStatus();
}

// An [[array-of-tables]] named `name`: the defaults dropped, then each table added.
absl::Status ReadArray(const toml::node& node, std::string_view source, std::string_view name,
                       size_t index, internal::Sink& sink) {
  const toml::array* entries = node.as_array();
  if (entries == nullptr || !entries->is_array_of_tables()) {
    return KeyError(source, node, name, StrCat("expected [[", name, "]] tables"));
  }
  sink.Reset(index);
  for (const toml::node& e : *entries) {
    const Entry::Impl impl{*e.as_table(), source, name};
    if (absl::Status st = sink.Add(index, Entry(impl)); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

std::optional<size_t> ArrayIndex(std::span<const std::string_view> arrays, std::string_view name) {
  for (size_t i = 0; i < arrays.size(); ++i) {
    if (arrays[i] == name) {
      return i;
    }
  }
  return std::nullopt;
}

}  // namespace

bool ValidDomainPattern(std::string_view p) {
  if (p == "*") {
    return true;
  }
  if (p.starts_with("*.")) {
    p.remove_prefix(2);
  }
  if (p.empty() || p.size() > 253 || p.front() == '.' || p.back() == '.') {
    return false;
  }
  for (char c : p) {
    const auto u = static_cast<unsigned char>(c);
    if (!(((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9')) ||
          c == '-' || c == '.' || u >= 0x80)) {
      return false;
    }
  }
  return p.find("..") == std::string_view::npos;
}

std::vector<std::string> Entry::Keys() const {
  std::vector<std::string> keys;
  for (const auto& [k, v] : impl_.table) {
    keys.emplace_back(k.str());
  }
  return keys;
}

bool Entry::Has(std::string_view key) const { return impl_.table.get(key) != nullptr; }

absl::Status Entry::Error(std::string_view key, std::string_view what) const {
  const toml::node* n = impl_.table.get(key);
  return KeyError(impl_.source, n != nullptr ? *n : static_cast<const toml::node&>(impl_.table),
                  StrCat(impl_.prefix, ".", key), what);
}

absl::Status Entry::OnlyKeys(std::initializer_list<std::string_view> allowed) const {
  for (const auto& [k, v] : impl_.table) {
    if (std::find(allowed.begin(), allowed.end(), k.str()) == allowed.end()) {
      return KeyError(impl_.source, v, StrCat(impl_.prefix, ".", k.str()), "unknown key");
    }
  }
  return absl::OkStatus();
}

absl::Status Entry::String(std::string_view key, std::string& out, bool required) const {
  const toml::node* n = impl_.table.get(key);
  if (n == nullptr) {
    return required ? Error(key, "is required") : absl::OkStatus();
  }
  auto v = n->value<std::string>();
  if (!n->is_string() || !v || v->empty()) {
    return Error(key, "expected a non-empty string");
  }
  out = *v;
  return absl::OkStatus();
}

std::optional<std::string> Entry::StringValue(std::string_view key) const {
  const toml::node* n = impl_.table.get(key);
  if (n == nullptr || !n->is_string()) {
    return std::nullopt;
  }
  return n->value<std::string>();
}

absl::Status Entry::Bool(std::string_view key, bool& out) const {
  const toml::node* n = impl_.table.get(key);
  if (n == nullptr) {
    return absl::OkStatus();
  }
  if (!n->is_boolean()) {
    return Error(key, "expected true or false");
  }
  out = n->value<bool>().value_or(out);
  return absl::OkStatus();
}

absl::Status Entry::Integer(std::string_view key, uint64_t min, uint64_t max, uint64_t& out) const {
  const toml::node* n = impl_.table.get(key);
  if (n == nullptr) {
    return absl::OkStatus();
  }
  auto v = n->value<int64_t>();
  if (!n->is_integer() || !v) {
    return Error(key, "expected an integer");
  }
  if (*v < 0 || static_cast<uint64_t>(*v) < min || static_cast<uint64_t>(*v) > max) {
    return Error(key, StrCat(*v, " is out of range [", min, ", ", max, "]"));
  }
  out = static_cast<uint64_t>(*v);
  return absl::OkStatus();
}

absl::Status Entry::Integers(std::string_view key, uint64_t min, uint64_t max,
                             std::vector<uint64_t>& out) const {
  const toml::node* n = impl_.table.get(key);
  if (n == nullptr) {
    return absl::OkStatus();
  }
  const toml::array* array = n->as_array();
  if (array == nullptr) {
    return Error(key, "expected an array of integers");
  }
  const std::string name = StrCat(impl_.prefix, ".", key);
  for (const toml::node& element : *array) {
    auto v = element.value<int64_t>();
    if (!element.is_integer() || !v) {
      return KeyError(impl_.source, element, name, "expected an integer");
    }
    if (*v < 0 || static_cast<uint64_t>(*v) < min || static_cast<uint64_t>(*v) > max) {
      return KeyError(impl_.source, element, name,
                      StrCat(*v, " is out of range [", min, ", ", max, "]"));
    }
    out.push_back(static_cast<uint64_t>(*v));
  }
  return absl::OkStatus();
}

absl::Status Entry::Strings(std::string_view key, std::string_view array_error,
                            std::string_view element_error,
                            absl::FunctionRef<bool(std::string_view)> element_ok, bool lowercase,
                            std::vector<std::string>& out) const {
  const toml::node* n = impl_.table.get(key);
  if (n == nullptr) {
    return absl::OkStatus();
  }
  const toml::array* array = n->as_array();
  if (array == nullptr) {
    return Error(key, array_error);
  }
  for (const toml::node& element : *array) {
    auto v = element.value<std::string>();
    if (!element.is_string() || !v || !element_ok(*v)) {
      return KeyError(impl_.source, element, StrCat(impl_.prefix, ".", key), element_error);
    }
    out.push_back(lowercase ? base::AsciiStrToLower(*v) : *v);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> Entry::Choose(std::string_view key,
                                     std::span<const std::string_view> words) const {
  const toml::node* n = impl_.table.get(key);
  if (n == nullptr) {
    return Error(key, "is required");
  }
  return ChooseWord(impl_.source, *n, StrCat(impl_.prefix, ".", key), words);
}

namespace internal {

absl::Status Read(std::string_view toml_text, std::string_view source,
                  std::span<const KeyInfo> keys, std::span<const std::string_view> arrays,
                  Sink& sink) {
  toml::parse_result parsed = toml::parse(toml_text, source);
  if (!parsed) {
    const toml::parse_error& e = parsed.error();
    return absl::InvalidArgumentError(
        StrCat(source, ":", static_cast<uint32_t>(e.source().begin.line), ":",
               static_cast<uint32_t>(e.source().begin.column), ": ", e.description()));
  }
  const toml::table& root = parsed.table();
  for (const auto& [table_name, table_node] : root) {
    if (std::optional<size_t> array = ArrayIndex(arrays, table_name.str())) {
      if (auto s = ReadArray(table_node, source, table_name.str(), *array, sink); !s.ok()) {
        return s;
      }
      continue;
    }
    const toml::table* table = table_node.as_table();
    bool known_table = false;
    for (const KeyInfo& k : keys) {
      known_table |= (k.table == table_name.str());
    }
    if (table == nullptr || !known_table) {
      return KeyError(source, table_node, table_name.str(),
                      table == nullptr ? "expected a table" : "unknown table");
    }
    for (const auto& [key_name, value] : *table) {
      const std::string path = StrCat(table_name.str(), ".", key_name.str());
      if (std::optional<size_t> array = ArrayIndex(arrays, path)) {
        if (auto s = ReadArray(value, source, path, *array, sink); !s.ok()) {
          return s;
        }
        continue;
      }
      std::optional<size_t> key;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (keys[i].table == table_name.str() && keys[i].name == key_name.str()) {
          key = i;
        }
      }
      if (!key) {
        return KeyError(source, value, path, "unknown key");
      }
      Slot slot = sink.SlotOf(*key);
      if (auto s = ApplyKey(keys[*key], value, source, slot); !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

void PrintKey(std::string_view table, std::string_view previous_table, std::string_view name,
              std::string_view doc, const Slot& slot, std::string& out) {
  if (table != previous_table) {
    StrAppend(&out, "\n[", table, "]\n");
  }
  StrAppend(&out, "# ", doc, "\n", name, " = ");
  if (uint32_t* const* u32 = std::get_if<uint32_t*>(&slot)) {
    StrAppend(&out, **u32);
  } else if (uint64_t* const* u64 = std::get_if<uint64_t*>(&slot)) {
    StrAppend(&out, **u64);
  } else if (bool* const* b = std::get_if<bool*>(&slot)) {
    out += **b ? "true" : "false";
  } else if (std::string* const* s = std::get_if<std::string*>(&slot)) {
    StrAppend(&out, "\"", **s, "\"");
  } else if (const ChoiceSlot* c = std::get_if<ChoiceSlot>(&slot)) {
    StrAppend(&out, "\"", c->words[c->current], "\"");
  } else if (std::vector<std::string>* const* list =
                 std::get_if<std::vector<std::string>*>(&slot)) {
    const auto& v = **list;
    StrAppend(&out, "[", v.empty() ? "" : "\"", base::StrJoin(v, "\", \""), v.empty() ? "" : "\"",
              "]");
  } else {
    std::vector<std::string> quoted;
    for (const auto& n : *std::get<std::vector<mail::IpNetwork>*>(slot)) {
      quoted.push_back(StrCat("\"", n.ToString(), "\""));
    }
    StrAppend(&out, "[", base::StrJoin(quoted, ", "), "]");
  }
  out += "\n";
}

}  // namespace internal

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(StrCat(path, ": cannot open config file"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace relais::config
