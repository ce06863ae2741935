// core/config/config.h — reading one TOML config file into typed option structs.
//
// This is only the machinery: which keys exist is the program's schema, declared above core/
// (relaisd's is tools/relaisd/config_schema.h). A schema is a list of keys, each binding a TOML
// key to a typed member of the program's option aggregate (`Field<&A::b, &B::c>`, no untyped
// pointers), with its bounds and a one-line doc; the default is whatever the default-constructed
// aggregate holds, so it is written once, in the module's options struct. Choices ("off|tag")
// become enums as the file is read. The same key list parses, rejects unknown tables and keys,
// and prints the defaults. Every error names the file, the line and the key. Used on the startup
// thread only; nothing here is shared with the shards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/config/route.h"
#include "core/mail/ip_network.h"

namespace relais::config {

// A choice key's word and the enum value it stands for.
template <typename E>
struct Word {
  std::string_view word;
  E value;
};

// A choice key bound to an enum (or bool) member: its words, in the order errors list them.
struct ChoiceSlot {
  std::vector<std::string_view> words;
  size_t current = 0;               // Index of the member's value in `words`.
  std::function<void(size_t)> set;  // Stores the value of words[i] into the member.
};

// Where a key's value goes: a typed pointer into the aggregate being filled. The type decides
// how the value is read and printed: integers (bounds: the value), strings (bounds: the
// length), arrays of strings or CIDR networks (bounds: the entry count), booleans, choices.
using Slot = std::variant<uint32_t*, uint64_t*, bool*, std::string*, std::vector<std::string>*,
                          std::vector<mail::IpNetwork>*, ChoiceSlot>;

struct Bounds {
  uint64_t min = 0;
  uint64_t max = ~uint64_t{0};
};

// One key of a [table]: the single declaration of its name, type (the member's), bounds and
// meaning.
template <typename Root>
struct Key {
  std::string_view table;
  std::string_view name;
  Slot (*slot)(Root&);
  Bounds bounds;
  std::string_view doc;
  bool domain_patterns = false;  // String arrays: each entry is a domain, *.domain or *.
};

// One table of an [[array]]: typed reads whose errors name "<array>.<key>" and the line of the
// key (or of the table when the key is absent). Valid only inside the array's `add` callback.
class Entry {
 public:
  struct Impl;
  explicit Entry(const Impl& impl) : impl_(impl) {}  // Built by the reader only.

  // The keys written in this table, in the order they are iterated (sorted).
  [[nodiscard]] std::vector<std::string> Keys() const;
  [[nodiscard]] bool Has(std::string_view key) const;
  // "<array>.<key>: <what>" at the key's line, or the table's when the key is absent.
  [[nodiscard]] absl::Status Error(std::string_view key, std::string_view what) const;
  // An error for the first key not in `allowed` ("unknown key"); OK when there is none.
  [[nodiscard]] absl::Status OnlyKeys(std::initializer_list<std::string_view> allowed) const;
  // A non-empty string into `out`; absent is an error when `required` ("is required"), else
  // `out` is left as it is.
  [[nodiscard]] absl::Status String(std::string_view key, std::string& out, bool required) const;
  // The value of `key` when it is a string; nullopt when absent or of another type.
  [[nodiscard]] std::optional<std::string> StringValue(std::string_view key) const;
  // A boolean into `out`; absent: OK, `out` untouched; another type: "expected true or false".
  [[nodiscard]] absl::Status Bool(std::string_view key, bool& out) const;
  // An integer within [min, max] into `out`; absent: OK, `out` untouched; otherwise the errors
  // a [table] key gives ("expected an integer", "N is out of range [min, max]").
  [[nodiscard]] absl::Status Integer(std::string_view key, uint64_t min, uint64_t max,
                                     uint64_t& out) const;
  // An array of integers within [min, max] appended to `out`; absent: OK. Errors as Integer's,
  // at the element's line ("expected an array of integers" when it is not an array).
  [[nodiscard]] absl::Status Integers(std::string_view key, uint64_t min, uint64_t max,
                                      std::vector<uint64_t>& out) const;
  // An array of strings, each passing `element_ok`, appended to `out` (lowercased when
  // `lowercase`). Absent: OK, `out` untouched. Not an array: `array_error` at the key;
  // a bad element: `element_error` at the element's line.
  [[nodiscard]] absl::Status Strings(std::string_view key, std::string_view array_error,
                                     std::string_view element_error,
                                     absl::FunctionRef<bool(std::string_view)> element_ok,
                                     bool lowercase, std::vector<std::string>& out) const;
  // A choice: the index in `words` of the key's value, or the error a [table] key of that
  // choice gives ("expected a string", "'x' is not one of a,b").
  [[nodiscard]] absl::StatusOr<size_t> Choose(std::string_view key,
                                              std::span<const std::string_view> words) const;

 private:
  const Impl& impl_;
};

// An [[array]] of tables ("routes", or "auth.listener" inside [auth]): the file's tables replace
// the default entries (`reset`), each added by `add`.
template <typename Root>
struct Array {
  std::string_view name;
  void (*reset)(Root&);
  absl::Status (*add)(const Entry&, Root&);
};

template <typename Root>
struct Schema {
  std::span<const Key<Root>> keys;      // In the order they are printed.
  std::span<const Array<Root>> arrays;  // Not printed: the schema writes their comments.
};

// True for "example.com", "*.example.com" and "*" (letters, digits, '-', '.', UTF-8).
[[nodiscard]] bool ValidDomainPattern(std::string_view pattern);

namespace internal {
struct KeyInfo {
  std::string_view table;
  std::string_view name;
  Bounds bounds;
  bool domain_patterns;
};
class Sink {
 public:
  virtual Slot SlotOf(size_t key) = 0;
  virtual void Reset(size_t array) = 0;
  virtual absl::Status Add(size_t array, const Entry& entry) = 0;

 protected:
  ~Sink() = default;
};
[[nodiscard]] absl::Status Read(std::string_view toml_text, std::string_view source,
                                std::span<const KeyInfo> keys,
                                std::span<const std::string_view> arrays, Sink& sink);
void PrintKey(std::string_view table, std::string_view previous_table, std::string_view name,
              std::string_view doc, const Slot& slot, std::string& out);

template <typename M>
struct MemberOf;
template <typename C, typename T>
struct MemberOf<T C::*> {
  using Class = C;
};
template <auto First, auto... Rest, typename C>
auto& Walk(C& object) {
  auto& member = object.*First;
  if constexpr (sizeof...(Rest) == 0) {
    return member;
  } else {
    return Walk<Rest...>(member);
  }
}
}  // namespace internal

// The member reached from the aggregate by a path of pointers to members, as a Slot:
// Field<&Daemon::shard, &ShardOptions::spool, &SpoolOptions::path>. The member's type must be
// one of Slot's.
template <auto First, auto... Rest>
Slot Field(typename internal::MemberOf<decltype(First)>::Class& root) {
  return Slot(&internal::Walk<First, Rest...>(root));
}

// A choice member (an enum, or a bool) reached the same way; `Words` lists every word it takes.
template <const auto& Words, auto First, auto... Rest>
Slot ChoiceField(typename internal::MemberOf<decltype(First)>::Class& root) {
  auto& member = internal::Walk<First, Rest...>(root);
  ChoiceSlot slot;
  for (size_t i = 0; i < std::size(Words); ++i) {
    slot.words.push_back(Words[i].word);
    if (Words[i].value == member) {
      slot.current = i;
    }
  }
  slot.set = [&member](size_t i) { member = Words[i].value; };
  return slot;
}

// Parses TOML text into a default-constructed Root; `source` names the file in errors.
// Unknown tables and keys are errors. Cross-key checks are the schema's, after this.
template <typename Root>
[[nodiscard]] absl::StatusOr<Root> Read(const Schema<Root>& schema, std::string_view toml_text,
                                        std::string_view source) {
  std::vector<internal::KeyInfo> keys;
  for (const Key<Root>& k : schema.keys) {
    keys.push_back({k.table, k.name, k.bounds, k.domain_patterns});
  }
  std::vector<std::string_view> arrays;
  for (const Array<Root>& a : schema.arrays) {
    arrays.push_back(a.name);
  }
  struct RootSink final : internal::Sink {
    RootSink(const Schema<Root>& s, Root& r) : schema(s), root(r) {}
    Slot SlotOf(size_t key) override { return schema.keys[key].slot(root); }
    void Reset(size_t array) override { schema.arrays[array].reset(root); }
    absl::Status Add(size_t array, const Entry& entry) override {
      return schema.arrays[array].add(entry, root);
    }
    const Schema<Root>& schema;
    Root& root;
  };
  Root root;
  RootSink sink(schema, root);
  if (absl::Status s = internal::Read(toml_text, source, keys, arrays, sink); !s.ok()) {
    return s;
  }
  return root;
}

// Every key of the schema as TOML ("[table]", then "# doc" and "name = value" per key) with
// the values `values` holds.
template <typename Root>
[[nodiscard]] std::string Print(const Schema<Root>& schema, Root values) {
  std::string out;
  std::string_view previous;
  for (const Key<Root>& k : schema.keys) {
    internal::PrintKey(k.table, previous, k.name, k.doc, k.slot(values), out);
    previous = k.table;
  }
  return out;
}

// Reads a whole file; NotFound names it when it cannot be opened.
[[nodiscard]] absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace relais::config
