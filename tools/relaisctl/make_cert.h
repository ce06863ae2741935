// tools/relaisctl/make_cert.h — `relaisctl make-cert`: a self-signed certificate and its key for
// a quick start with TLS ([[tls.certificate]] chain and key), made by protocols/tls.
//
//   relaisctl make-cert --names a.example,b.example [--key-type ecdsa|rsa] [--days 365]
//                       --chain F --key F [--force]
//
// ECDSA P-256 by default (RSA 2048 for old clients); the names become subjectAltName DNS
// entries, the first also the CN. The key is written 0600, the chain 0644. Existing files are
// kept unless --force is given: overwriting a key in use by accident would cut every client off.
#pragma once

#include <span>

namespace relais::relaisctl {

// `words`: the arguments after "make-cert". Returns the exit code (0 done, 1 failed, 2 usage).
[[nodiscard]] int MakeCertCommand(std::span<char* const> words);

}  // namespace relais::relaisctl
