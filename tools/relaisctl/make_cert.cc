#include "tools/relaisctl/make_cert.h"

#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "core/base/strings.h"
#include "protocols/tls/tls.h"
#include "tools/cli/args.h"

ABSL_FLAG(std::string, names, "",
          "make-cert: the DNS names, comma-separated (the first is the CN)");
ABSL_FLAG(std::string, key_type, "ecdsa", "make-cert: ecdsa (P-256) or rsa (2048 bits)");
ABSL_FLAG(uint32_t, days, 365, "make-cert: days the certificate is valid");
ABSL_FLAG(std::string, chain, "", "make-cert: where to write the certificate (PEM)");
ABSL_FLAG(std::string, key, "", "make-cert: where to write the private key (PEM, mode 0600)");
ABSL_FLAG(bool, force, false, "make-cert: overwrite existing files");

namespace relais::relaisctl {
namespace {

constexpr char kUsage[] =
    "usage: relaisctl make-cert --names a.example,b.example [--key-type ecdsa|rsa] [--days 365]\n"
    "                           --chain FILE --key FILE [--force]\n";

// A DNS name or a wildcard one ("*.example.com"): labels of letters, digits and hyphens.
bool ValidName(std::string_view name) {
  if (name.starts_with("*.")) {
    name.remove_prefix(2);
  }
  if (name.empty() || name.size() > 253) {
    return false;
  }
  for (std::string_view label : base::Split(name, '.')) {
    if (label.empty() || label.size() > 63) {
      return false;
    }
    for (char c : label) {
      if (!base::IsAsciiAlpha(c) && !base::IsAsciiDigit(c) && c != '-') {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

int MakeCertCommand(std::span<char* const> words) {
  constexpr std::string_view kFlags[] = {"names", "key-type", "days", "chain", "key", "force"};
  absl::StatusOr<cli::Args> args = cli::Parse(words, kFlags);
  if (!args.ok()) {
    std::fprintf(stderr, "relaisctl: %s\n%s", std::string(args.status().message()).c_str(), kUsage);
    return 2;
  }
  if (args->help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string chain = absl::GetFlag(FLAGS_chain);
  const std::string key = absl::GetFlag(FLAGS_key);
  const std::string key_type = absl::GetFlag(FLAGS_key_type);
  const uint32_t days = absl::GetFlag(FLAGS_days);
  const std::string names_text = absl::GetFlag(FLAGS_names);  // Split returns views into it.
  std::vector<std::string> names;
  for (std::string_view name : base::Split(names_text, ',')) {
    names.push_back(base::AsciiStrToLower(base::Trim(name)));
  }
  if (!args->positional.empty() || names_text.empty() || chain.empty() || key.empty() ||
      chain == key) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  for (const std::string& name : names) {
    if (!ValidName(name)) {
      std::fprintf(stderr, "relaisctl: --names: '%s' is not a DNS name\n", name.c_str());
      return 2;
    }
  }
  if (key_type != "ecdsa" && key_type != "rsa") {
    std::fprintf(stderr, "relaisctl: --key-type is ecdsa or rsa, not %s\n", key_type.c_str());
    return 2;
  }
  if (days == 0 || days > 36500) {
    std::fprintf(stderr, "relaisctl: --days is 1 to 36500\n");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_force)) {
    for (const std::string& path : {chain, key}) {
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0) {
        std::fprintf(stderr, "relaisctl: %s exists; remove it or pass --force\n", path.c_str());
        return 1;
      }
    }
  }
  const absl::Status made = tls::MakeSelfSignedCertificate(key_type, names, days, chain, key);
  if (!made.ok()) {
    std::fprintf(stderr, "relaisctl: %s\n", std::string(made.message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "relaisctl: wrote %s (%s, %u days, %s) and %s\n", chain.c_str(),
               key_type.c_str(), days, base::StrJoin(names, ",").c_str(), key.c_str());
  return 0;
}

}  // namespace relais::relaisctl
