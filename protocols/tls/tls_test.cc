// protocols/tls/tls_test.cc — the TLS transport and contexts with in-memory pairs (and once over
// the stream pump and the fake socket seam). Certificates are made here, in a temp directory.
#include "protocols/tls/tls.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/io/fake_net.h"
#include "core/net/stream_pump.h"
#include "protocols/tls/tls_pair.h"

namespace relais::tls {
namespace {

// glibc's heap counts (mallinfo2) do not see ASan's allocator.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif
#else
constexpr bool kUnderAsan = false;
#endif

using Session = net::BufferSession;

void Pump(Side& client, Side& server, size_t chunk = SIZE_MAX) {
  ASSERT_TRUE(RunUntilQuiet(client, server, chunk)) << "the pair never went quiet";
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/relais_tls_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    auto make = [](const std::string& name, std::string_view type,
                   const std::vector<std::string>& names) {
      CertificateFiles files{*dir_ + "/" + name + ".pem", *dir_ + "/" + name + ".key"};
      const absl::Status status =
          MakeSelfSignedCertificate(type, names, 30, files.chain_path, files.key_path);
      EXPECT_TRUE(status.ok()) << status;
      return files;
    };
    ecdsa_ = new CertificateFiles(make("ecdsa", "ecdsa", {"mail.example.com", "*.example.net"}));
    rsa_ = new CertificateFiles(make("rsa", "rsa", {"mail.example.com", "*.example.net"}));
    other_ = new CertificateFiles(make("other", "ecdsa", {"other.example.org"}));
    untrusted_ = new CertificateFiles(make("untrusted", "ecdsa", {"mail.example.com"}));
    bundle_ = new std::string(*dir_ + "/bundle.pem");
    std::ofstream(*bundle_) << Slurp(ecdsa_->chain_path) << Slurp(rsa_->chain_path)
                            << Slurp(other_->chain_path);
  }

  static std::unique_ptr<ServerContext> MakeServer(std::vector<CertificateFiles> certificates,
                                                   TicketKeysOptions tickets = {}) {
    ServerOptions options;
    options.certificates = std::move(certificates);
    options.tickets = std::move(tickets);
    auto context = ServerContext::Create(options);
    EXPECT_TRUE(context.ok()) << context.status();
    return context.ok() ? *std::move(context) : nullptr;
  }
  static std::unique_ptr<ClientContext> MakeClient(const std::string& ca_file = *bundle_) {
    ClientOptions options;
    options.ca_file = ca_file;
    auto context = ClientContext::Create(options);
    EXPECT_TRUE(context.ok()) << context.status();
    return context.ok() ? *std::move(context) : nullptr;
  }

  static std::string* dir_;
  static CertificateFiles* ecdsa_;
  static CertificateFiles* rsa_;
  static CertificateFiles* other_;
  static CertificateFiles* untrusted_;
  static std::string* bundle_;
};

std::string* TlsTest::dir_;
CertificateFiles* TlsTest::ecdsa_;
CertificateFiles* TlsTest::rsa_;
CertificateFiles* TlsTest::other_;
CertificateFiles* TlsTest::untrusted_;
std::string* TlsTest::bundle_;

TEST_F(TlsTest, HandshakeAndEchoBothWays) {
  auto server_context = MakeServer({*ecdsa_, *rsa_});
  auto client_context = MakeClient();
  Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kVerify, ""),
              {}};
  Side server{TlsTransport::Server(*server_context), {}};
  server.session.echo = true;
  client.session.output = "EHLO client.example\r\n";
  Pump(client, server);
  ASSERT_EQ(client.tls->state(), TlsState::kOpen) << client.tls->failure();
  ASSERT_EQ(server.tls->state(), TlsState::kOpen) << server.tls->failure();
  EXPECT_TRUE(client.tls->TakeHandshakeDone());
  EXPECT_FALSE(client.tls->TakeHandshakeDone());
  EXPECT_TRUE(server.tls->TakeHandshakeDone());
  EXPECT_EQ(server.session.received, "EHLO client.example\r\n");
  EXPECT_EQ(client.session.received, "EHLO client.example\r\n");
  const HandshakeInfo info = client.tls->info();
  EXPECT_EQ(info.version, "TLSv1.3");
  EXPECT_EQ(info.group, "X25519");
  EXPECT_EQ(info.cipher.substr(0, 4), "TLS_");
  EXPECT_TRUE(info.verified);
  EXPECT_FALSE(info.resumed);
  EXPECT_EQ(server.tls->info().server_name, "mail.example.com");
  EXPECT_FALSE(client.tls->WantsClose(client.session));
  EXPECT_TRUE(client.tls->WantsInput(client.session));
}

TEST_F(TlsTest, ByteAtATime) {
  auto server_context = MakeServer({*ecdsa_});
  auto client_context = MakeClient();
  Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kVerify, ""),
              {}};
  Side server{TlsTransport::Server(*server_context), {}};
  server.session.echo = true;
  client.session.output = "MAIL FROM:<a@example.com>\r\n";
  Pump(client, server, 1);
  ASSERT_EQ(client.tls->state(), TlsState::kOpen) << client.tls->failure();
  ASSERT_EQ(server.tls->state(), TlsState::kOpen) << server.tls->failure();
  EXPECT_EQ(client.session.received, "MAIL FROM:<a@example.com>\r\n");
}

// Every split point of the client's first flight and of the server's answer.
TEST_F(TlsTest, EverySplitOfTheFirstFlights) {
  auto server_context = MakeServer({*ecdsa_});
  auto client_context = MakeClient();
  for (int flight = 0; flight < 2; ++flight) {
    size_t splits = 1;
    for (size_t at = 1; at < splits + 1; ++at) {
      Side client{
          TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kVerify, ""), {}};
      Side server{TlsTransport::Server(*server_context), {}};
      server.session.echo = true;
      client.session.output = "HELO x\r\n";
      std::string hello;
      client.tls->TakeOutput(client.session, hello);
      std::string_view first = hello;
      Side* receiver = &server;
      std::string answer;
      if (flight == 1) {
        server.tls->OnReceived(hello, server.session);
        server.tls->TakeOutput(server.session, answer);
        first = answer;
        receiver = &client;
      }
      splits = first.size() - 1;
      receiver->tls->OnReceived(first.substr(0, at), receiver->session);
      receiver->tls->OnReceived(first.substr(at), receiver->session);
      Pump(client, server);
      ASSERT_EQ(client.tls->state(), TlsState::kOpen) << "flight " << flight << " at " << at;
      ASSERT_EQ(server.tls->state(), TlsState::kOpen) << "flight " << flight << " at " << at;
      ASSERT_EQ(client.session.received, "HELO x\r\n") << "flight " << flight << " at " << at;
    }
    EXPECT_GT(splits, 100u);
  }
}

TEST_F(TlsTest, OneMebibyteBothWays) {
  auto server_context = MakeServer({*ecdsa_});
  auto client_context = MakeClient();
  Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kNone, ""), {}};
  Side server{TlsTransport::Server(*server_context), {}};
  server.session.echo = true;
  std::string data(1 << 20, '\0');
  std::mt19937 random(7);
  for (char& c : data) {
    c = static_cast<char>(random());
  }
  client.session.output = data;
  Pump(client, server, 16384);  // As the socket delivers it: provided buffers of 16 KiB.
  EXPECT_EQ(server.session.received.size(), data.size());
  EXPECT_TRUE(server.session.received == data);
  EXPECT_TRUE(client.session.received == data);
}

TEST_F(TlsTest, CloseNotifyBothWays) {
  auto server_context = MakeServer({*ecdsa_});
  auto client_context = MakeClient();
  Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kNone, ""), {}};
  Side server{TlsTransport::Server(*server_context), {}};
  server.session.output = "220 ready\r\n";
  server.session.close_on_end = true;
  Pump(client, server);
  ASSERT_EQ(client.session.received, "220 ready\r\n");
  client.session.output = "QUIT\r\n";
  client.session.closing = true;
  Pump(client, server);
  EXPECT_EQ(server.session.received, "QUIT\r\n");
  EXPECT_EQ(client.tls->state(), TlsState::kClosed);
  EXPECT_TRUE(client.tls->WantsClose(client.session));
  EXPECT_TRUE(server.session.ended);  // close_notify is the end of input.
  EXPECT_FALSE(server.tls->truncated());
  EXPECT_EQ(server.tls->state(), TlsState::kClosed);  // Answered.
  EXPECT_TRUE(server.tls->WantsClose(server.session));
  EXPECT_FALSE(server.tls->WantsInput(server.session));
  EXPECT_TRUE(client.session.ended);
  client.tls->OnEndOfInput(client.session);
  EXPECT_FALSE(client.tls->truncated());
}

// A reply still being made when close_notify arrives (the client sent QUIT and closed its side
// at once) still goes out, then close_notify.
TEST_F(TlsTest, RepliesAfterThePeersCloseNotify) {
  auto server_context = MakeServer({*ecdsa_});
  auto client_context = MakeClient();
  Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kNone, ""), {}};
  Side server{TlsTransport::Server(*server_context), {}};
  client.session.output = "QUIT\r\n";
  client.session.closing = true;
  Pump(client, server);
  ASSERT_TRUE(server.session.ended);
  EXPECT_TRUE(server.tls->WantsClose(server.session));  // Nothing to say: may close.
  server.session.output = "221 bye\r\n";
  server.session.closing = true;
  EXPECT_FALSE(server.tls->WantsClose(server.session));
  Pump(client, server);
  EXPECT_EQ(client.session.received, "221 bye\r\n");
  EXPECT_EQ(server.tls->state(), TlsState::kClosed);
  EXPECT_TRUE(server.tls->WantsClose(server.session));
}

TEST_F(TlsTest, TruncationIsReported) {
  auto server_context = MakeServer({*ecdsa_});
  auto client_context = MakeClient();
  Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kNone, ""), {}};
  Side server{TlsTransport::Server(*server_context), {}};
  client.session.output = "DATA\r\n";
  Pump(client, server);
  ASSERT_EQ(server.tls->state(), TlsState::kOpen);
  server.tls->OnEndOfInput(server.session);
  EXPECT_TRUE(server.tls->truncated());
  EXPECT_TRUE(server.session.ended);
}

TEST_F(TlsTest, GarbageInsteadOfAClientHello) {
  auto server_context = MakeServer({*ecdsa_});
  std::mt19937 random(11);
  std::string noise(512, '\0');
  for (char& c : noise) {
    c = static_cast<char>(random());
  }
  noise[0] = 'x';
  for (const std::string& garbage : {std::string("EHLO x\r\n"), noise}) {
    Side server{TlsTransport::Server(*server_context), {}};
    server.tls->OnReceived(garbage, server.session);
    EXPECT_EQ(server.tls->state(), TlsState::kFailed);
    EXPECT_FALSE(server.tls->failure().empty());
    EXPECT_FALSE(server.tls->WantsInput(server.session));
    std::string out;
    server.tls->TakeOutput(server.session, out);  // An alert, perhaps.
    EXPECT_TRUE(server.tls->WantsClose(server.session));
    EXPECT_TRUE(server.session.received.empty());
  }
}

TEST_F(TlsTest, PeerClosesDuringTheHandshake) {
  auto server_context = MakeServer({*ecdsa_});
  Side server{TlsTransport::Server(*server_context), {}};
  server.tls->OnEndOfInput(server.session);
  EXPECT_EQ(server.tls->state(), TlsState::kFailed);
  EXPECT_FALSE(server.tls->failure().empty());
}

// A client of BoringSSL's own, configured the way the transport's clients cannot be.
struct RawClient {
  explicit RawClient(SSL_CTX* ctx, const char* server_name = nullptr) : ssl(SSL_new(ctx)) {
    in = BIO_new(BIO_s_mem());
    out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl.get(), in, out);
    SSL_set_connect_state(ssl.get());
    if (server_name != nullptr) {
      SSL_set_tlsext_host_name(ssl.get(), server_name);
    }
  }
  // Runs the handshake against `server` until it is done or stuck; true when done.
  bool Handshake(Side& server) {
    for (int i = 0; i < 20; ++i) {
      const int ret = SSL_do_handshake(ssl.get());
      const uint8_t* data;
      size_t length;
      BIO_mem_contents(out, &data, &length);
      std::string bytes(reinterpret_cast<const char*>(data), length);
      BIO_reset(out);
      if (!bytes.empty()) {
        server.tls->OnReceived(bytes, server.session);
      }
      if (ret == 1) {
        return true;
      }
      std::string answer;
      server.tls->TakeOutput(server.session, answer);
      if (answer.empty() && bytes.empty()) {
        return false;
      }
      BIO_write(in, answer.data(), static_cast<int>(answer.size()));
    }
    return false;
  }
  int PeerKeyType() const {
    bssl::UniquePtr<X509> cert(SSL_get_peer_certificate(ssl.get()));
    bssl::UniquePtr<EVP_PKEY> key(X509_get_pubkey(cert.get()));
    return EVP_PKEY_id(key.get());
  }
  std::string PeerName() const {
    bssl::UniquePtr<X509> cert(SSL_get_peer_certificate(ssl.get()));
    char name[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, name, sizeof name);
    return name;
  }
  bssl::UniquePtr<SSL> ssl;
  BIO* in;
  BIO* out;
};

TEST_F(TlsTest, Tls11OnlyClientIsRefused) {
  auto server_context = MakeServer({*ecdsa_, *rsa_});
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_1_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_1_VERSION);
  RawClient client(ctx.get());
  Side server{TlsTransport::Server(*server_context), {}};
  EXPECT_FALSE(client.Handshake(server));
  EXPECT_EQ(server.tls->state(), TlsState::kFailed);
  EXPECT_NE(server.tls->failure().find("UNSUPPORTED_PROTOCOL"), std::string::npos)
      << server.tls->failure();
}

TEST_F(TlsTest, Tls12ClientGetsAnAeadSuite) {
  auto server_context = MakeServer({*ecdsa_, *rsa_});
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION);
  RawClient client(ctx.get());
  Side server{TlsTransport::Server(*server_context), {}};
  ASSERT_TRUE(client.Handshake(server));
  EXPECT_EQ(server.tls->info().version, "TLSv1.2");
  EXPECT_NE(server.tls->info().cipher.find("ECDHE"), std::string_view::npos);
  EXPECT_NE(server.tls->info().cipher.find("GCM"), std::string_view::npos);
}

TEST_F(TlsTest, Tls12CbcOnlyClientIsRefused) {
  auto server_context = MakeServer({*ecdsa_, *rsa_});
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION);
  ASSERT_EQ(SSL_CTX_set_strict_cipher_list(ctx.get(), "ECDHE-RSA-AES128-SHA:AES128-SHA"), 1);
  RawClient client(ctx.get());
  Side server{TlsTransport::Server(*server_context), {}};
  EXPECT_FALSE(client.Handshake(server));
  EXPECT_EQ(server.tls->state(), TlsState::kFailed);
}

TEST_F(TlsTest, EcdsaOrRsaByWhatTheClientSupports) {
  auto server_context = MakeServer({*ecdsa_, *rsa_});
  const uint16_t ecdsa_only[] = {SSL_SIGN_ECDSA_SECP256R1_SHA256};
  const uint16_t rsa_only[] = {SSL_SIGN_RSA_PSS_RSAE_SHA256, SSL_SIGN_RSA_PKCS1_SHA256};
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    for (bool ecdsa : {true, false}) {
      bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
      SSL_CTX_set_max_proto_version(ctx.get(), version);
      ASSERT_EQ(SSL_CTX_set_verify_algorithm_prefs(ctx.get(), ecdsa ? ecdsa_only : rsa_only,
                                                   ecdsa ? 1 : 2),
                1);
      RawClient client(ctx.get(), "mail.example.com");
      Side server{TlsTransport::Server(*server_context), {}};
      ASSERT_TRUE(client.Handshake(server)) << server.tls->failure();
      EXPECT_EQ(client.PeerKeyType(), ecdsa ? EVP_PKEY_EC : EVP_PKEY_RSA) << "version " << version;
    }
  }
  // RSA listed first: a client that takes both still gets it.
  auto rsa_first = MakeServer({*rsa_, *ecdsa_});
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  RawClient client(ctx.get(), "mail.example.com");
  Side server{TlsTransport::Server(*rsa_first), {}};
  ASSERT_TRUE(client.Handshake(server));
  EXPECT_EQ(client.PeerKeyType(), EVP_PKEY_RSA);
}

TEST_F(TlsTest, SniPicksTheCertificate) {
  auto server_context = MakeServer({*ecdsa_, *other_});
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  struct Case {
    const char* sni;
    const char* expected_cn;
  };
  for (const Case& c : {Case{"other.example.org", "other.example.org"},
                        Case{"OTHER.example.org", "other.example.org"},
                        Case{"mail.example.com", "mail.example.com"},
                        Case{"x.example.net", "mail.example.com"},    // Wildcard.
                        Case{"unknown.example", "mail.example.com"},  // The first.
                        Case{nullptr, "mail.example.com"}}) {
    RawClient client(ctx.get(), c.sni);
    Side server{TlsTransport::Server(*server_context), {}};
    ASSERT_TRUE(client.Handshake(server));
    EXPECT_EQ(client.PeerName(), c.expected_cn) << (c.sni != nullptr ? c.sni : "(none)");
  }
  // And through the transport's own client, verifying the name.
  auto client_context = MakeClient();
  for (const char* name : {"other.example.org", "a.example.net"}) {
    Side client{TlsTransport::Client(*client_context, name, VerifyMode::kVerify, ""), {}};
    Side server{TlsTransport::Server(*server_context), {}};
    Pump(client, server);
    EXPECT_EQ(client.tls->state(), TlsState::kOpen) << name << ": " << client.tls->failure();
    EXPECT_TRUE(client.tls->info().verified);
  }
}

TEST_F(TlsTest, VerifyWrongNameAndUntrustedCa) {
  auto server_context = MakeServer({*ecdsa_});
  {
    auto client_context = MakeClient();
    Side client{TlsTransport::Client(*client_context, "wrong.example.com", VerifyMode::kVerify, ""),
                {}};
    Side server{TlsTransport::Server(*server_context), {}};
    Pump(client, server);
    EXPECT_EQ(client.tls->state(), TlsState::kFailed);
    EXPECT_NE(client.tls->failure().find("Hostname mismatch"), std::string::npos)
        << client.tls->failure();
    EXPECT_NE(server.tls->state(), TlsState::kOpen);
  }
  {
    auto client_context = MakeClient(untrusted_->chain_path);
    Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kVerify, ""),
                {}};
    Side server{TlsTransport::Server(*server_context), {}};
    Pump(client, server);
    EXPECT_EQ(client.tls->state(), TlsState::kFailed);
    EXPECT_FALSE(client.tls->failure().empty());
    // kNone still encrypts.
    Side client2{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kNone, ""),
                 {}};
    Side server2{TlsTransport::Server(*server_context), {}};
    Pump(client2, server2);
    EXPECT_EQ(client2.tls->state(), TlsState::kOpen);
    EXPECT_FALSE(client2.tls->info().verified);
  }
  {
    // An address: verified against the certificate's IP SANs (there are none), no SNI sent.
    auto client_context = MakeClient();
    Side client{TlsTransport::Client(*client_context, "192.0.2.1", VerifyMode::kVerify, ""), {}};
    Side server{TlsTransport::Server(*server_context), {}};
    Pump(client, server);
    EXPECT_EQ(client.tls->state(), TlsState::kFailed);
    EXPECT_TRUE(server.tls->info().server_name.empty());
  }
}

// The optional client certificate goes out when a server asks for one.
TEST_F(TlsTest, ClientCertificateIsPresented) {
  ClientOptions options;
  options.ca_file = "";
  options.client_certificate = *other_;
  auto client_context = ClientContext::Create(options);
  ASSERT_TRUE(client_context.ok()) << client_context.status();
  // A BoringSSL server of the test's own that requests a certificate (and accepts any).
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  bssl::UniquePtr<BIO> chain_bio(BIO_new_file(ecdsa_->chain_path.c_str(), "r"));
  bssl::UniquePtr<BIO> key_bio(BIO_new_file(ecdsa_->key_path.c_str(), "r"));
  bssl::UniquePtr<X509> cert(PEM_read_bio_X509(chain_bio.get(), nullptr, nullptr, nullptr));
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ASSERT_EQ(SSL_CTX_use_certificate(ctx.get(), cert.get()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(ctx.get(), key.get()), 1);
  SSL_CTX_set_custom_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                            [](SSL*, uint8_t*) { return ssl_verify_ok; });
  bssl::UniquePtr<SSL> server(SSL_new(ctx.get()));
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(server.get(), in, out);
  SSL_set_accept_state(server.get());
  Side client{TlsTransport::Client(**client_context, "mail.example.com", VerifyMode::kNone, ""),
              {}};
  for (int i = 0; i < 10; ++i) {
    std::string bytes;
    client.tls->TakeOutput(client.session, bytes);
    BIO_write(in, bytes.data(), static_cast<int>(bytes.size()));
    SSL_do_handshake(server.get());
    const uint8_t* data;
    size_t length;
    BIO_mem_contents(out, &data, &length);
    const std::string answer(reinterpret_cast<const char*>(data), length);
    BIO_reset(out);
    if (!answer.empty()) {
      client.tls->OnReceived(answer, client.session);
    }
  }
  ASSERT_EQ(client.tls->state(), TlsState::kOpen) << client.tls->failure();
  ASSERT_FALSE(SSL_in_init(server.get()));
  bssl::UniquePtr<X509> presented(SSL_get_peer_certificate(server.get()));
  ASSERT_NE(presented, nullptr);
  char name[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(presented.get()), NID_commonName, name,
                            sizeof name);
  EXPECT_STREQ(name, "other.example.org");
  // A key that is not the leaf's is refused at Create, naming the file.
  options.client_certificate = {other_->chain_path, ecdsa_->key_path};
  auto mismatch = ClientContext::Create(options);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find(ecdsa_->key_path), std::string::npos);
}

TEST_F(TlsTest, CreateErrorsNameTheFile) {
  ServerOptions options;
  options.certificates = {{ecdsa_->chain_path, rsa_->key_path}};
  auto mismatch = ServerContext::Create(options);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find(rsa_->key_path), std::string::npos);
  options.certificates = {{*dir_ + "/missing.pem", ecdsa_->key_path}};
  auto missing = ServerContext::Create(options);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("missing.pem"), std::string::npos);
  options.certificates = {{ecdsa_->key_path, ecdsa_->key_path}};
  auto not_a_chain = ServerContext::Create(options);
  ASSERT_FALSE(not_a_chain.ok());
  EXPECT_NE(not_a_chain.status().message().find(ecdsa_->key_path), std::string::npos);
  options.certificates = {};
  EXPECT_FALSE(ServerContext::Create(options).ok());
  ClientOptions client;
  client.ca_file = *dir_ + "/no-ca.pem";
  auto no_ca = ClientContext::Create(client);
  ASSERT_FALSE(no_ca.ok());
  EXPECT_NE(no_ca.status().message().find("no-ca.pem"), std::string::npos);
}

// A symlink planted where the key goes is replaced, never written through.
TEST_F(TlsTest, SelfSignedCertificateDoesNotFollowASymlink) {
  const std::string target = *dir_ + "/planted-target";
  const std::string link = *dir_ + "/planted.key";
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  ASSERT_TRUE(
      MakeSelfSignedCertificate("ecdsa", {"a.example"}, 1, *dir_ + "/planted.pem", link).ok());
  struct stat st;
  EXPECT_NE(::stat(target.c_str(), &st), 0);
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(MakeSelfSignedCertificate("ecdsa", {"a.example"}, 1, *dir_ + "/no/such/dir.pem",
                                         *dir_ + "/no/such/dir.key")
                   .ok());
}

TEST_F(TlsTest, SelfSignedKeyIsPrivate) {
  struct stat st;
  ASSERT_EQ(stat(ecdsa_->key_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(MakeSelfSignedCertificate("dsa", {"a"}, 1, *dir_ + "/x.pem", *dir_ + "/x.key").ok());
  EXPECT_FALSE(MakeSelfSignedCertificate("ecdsa", {}, 1, *dir_ + "/x.pem", *dir_ + "/x.key").ok());
}

// Resumption: one handshake, some data (the client reads its tickets then), and the result.
struct Connection {
  TlsState client_state;
  bool resumed_client;
  bool resumed_server;
};
Connection Connect(ClientContext& client_context, ServerContext& server_context,
                   const std::string& key) {
  Side client{TlsTransport::Client(client_context, "mail.example.com", VerifyMode::kNone, key), {}};
  Side server{TlsTransport::Server(server_context), {}};
  server.session.echo = true;
  client.session.output = "NOOP\r\n";
  Pump(client, server);
  return {client.tls->state(), client.tls->info().resumed, server.tls->info().resumed};
}

TEST_F(TlsTest, TicketsResumeAcrossShardsAndRotate) {
  base::FakeClock clock;
  TicketKeysOptions tickets{std::string(32, 's'), 3600, &clock};
  auto shard_a = MakeServer({*ecdsa_}, tickets);
  auto shard_b = MakeServer({*ecdsa_}, tickets);
  auto client_context = MakeClient();

  Connection first = Connect(*client_context, *shard_a, "mx:25");
  ASSERT_EQ(first.client_state, TlsState::kOpen);
  EXPECT_FALSE(first.resumed_client);
  EXPECT_EQ(client_context->cached_sessions(), 1u);
  Connection second = Connect(*client_context, *shard_a, "mx:25");
  EXPECT_TRUE(second.resumed_client);
  EXPECT_TRUE(second.resumed_server);
  // Another shard: its own context, the same secret.
  Connection other_shard = Connect(*client_context, *shard_b, "mx:25");
  EXPECT_TRUE(other_shard.resumed_server);
  // Another destination has no session.
  EXPECT_FALSE(Connect(*client_context, *shard_a, "other:25").resumed_client);
  EXPECT_EQ(client_context->cached_sessions(), 2u);

  // One period later the previous key still opens the ticket (and a new one is issued).
  clock.AdvanceMs(3600 * 1000);
  EXPECT_TRUE(Connect(*client_context, *shard_b, "mx:25").resumed_server);
  EXPECT_TRUE(Connect(*client_context, *shard_a, "mx:25").resumed_server);
  // Two periods: its key is gone, a full handshake.
  Connection fresh = Connect(*client_context, *shard_a, "mx:25");
  ASSERT_TRUE(fresh.resumed_server);  // The ticket renewed just before.
  clock.AdvanceMs(2 * 3600 * 1000);
  Connection expired = Connect(*client_context, *shard_a, "mx:25");
  EXPECT_EQ(expired.client_state, TlsState::kOpen);
  EXPECT_FALSE(expired.resumed_server);
  EXPECT_FALSE(expired.resumed_client);

  // A different secret never opens the ticket.
  auto stranger = MakeServer({*ecdsa_}, TicketKeysOptions{std::string(32, 't'), 3600, &clock});
  Connection foreign = Connect(*client_context, *stranger, "mx:25");
  EXPECT_EQ(foreign.client_state, TlsState::kOpen);
  EXPECT_FALSE(foreign.resumed_server);
  // And tickets off: no resumption at all.
  auto no_tickets = MakeServer({*ecdsa_});
  Connect(*client_context, *no_tickets, "mx:26");
  EXPECT_FALSE(Connect(*client_context, *no_tickets, "mx:26").resumed_server);
}

TEST_F(TlsTest, Tls12TicketsResumeAcrossShards) {
  base::FakeClock clock;
  TicketKeysOptions tickets{std::string(40, 'k'), 600, &clock};
  auto shard_a = MakeServer({*ecdsa_, *rsa_}, tickets);
  auto shard_b = MakeServer({*ecdsa_, *rsa_}, tickets);
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT);
  RawClient first(ctx.get(), "mail.example.com");
  Side server_a{TlsTransport::Server(*shard_a), {}};
  ASSERT_TRUE(first.Handshake(server_a));
  bssl::UniquePtr<SSL_SESSION> session(SSL_get1_session(first.ssl.get()));
  ASSERT_NE(session, nullptr);
  RawClient second(ctx.get(), "mail.example.com");
  SSL_set_session(second.ssl.get(), session.get());
  Side server_b{TlsTransport::Server(*shard_b), {}};
  ASSERT_TRUE(second.Handshake(server_b));
  EXPECT_TRUE(server_b.tls->info().resumed);
  EXPECT_EQ(server_b.tls->info().version, "TLSv1.2");
  clock.AdvanceMs(2 * 600 * 1000);
  RawClient third(ctx.get(), "mail.example.com");
  SSL_set_session(third.ssl.get(), session.get());
  Side server_c{TlsTransport::Server(*shard_a), {}};
  ASSERT_TRUE(third.Handshake(server_c));
  EXPECT_FALSE(server_c.tls->info().resumed);
}

// A session made without verifying (a man in the middle could have made it) is never resumed
// where verification is asked for: the cache keeps them apart.
TEST_F(TlsTest, UnverifiedSessionIsNeverResumedUnderVerify) {
  auto impostor = MakeServer({*untrusted_}, TicketKeysOptions{std::string(32, 'i'), 3600});
  auto genuine = MakeServer({*ecdsa_}, TicketKeysOptions{std::string(32, 'g'), 3600});
  auto client_context = MakeClient();
  auto connect = [&](ServerContext& server_context, VerifyMode verify) {
    Side client{TlsTransport::Client(*client_context, "mail.example.com", verify, "mx:25"), {}};
    Side server{TlsTransport::Server(server_context), {}};
    server.session.echo = true;
    client.session.output = "NOOP\r\n";
    Pump(client, server);
    return std::make_pair(client.tls->state(), client.tls->info());
  };
  ASSERT_EQ(connect(*impostor, VerifyMode::kNone).first, TlsState::kOpen);
  auto [state, info] = connect(*impostor, VerifyMode::kVerify);
  EXPECT_EQ(state, TlsState::kFailed);
  EXPECT_FALSE(info.verified);
  // Verified sessions resume under verify, and only those.
  ASSERT_EQ(connect(*genuine, VerifyMode::kVerify).first, TlsState::kOpen);
  auto [state2, info2] = connect(*genuine, VerifyMode::kVerify);
  EXPECT_EQ(state2, TlsState::kOpen);
  EXPECT_TRUE(info2.resumed);
  EXPECT_TRUE(info2.verified);
}

// A large output is encrypted in bounded steps, one per TakeOutput (the pump calls it again
// after each send).
TEST_F(TlsTest, LargeOutputIsEncryptedInSteps) {
  auto server_context = MakeServer({*ecdsa_});
  auto client_context = MakeClient();
  Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kNone, ""), {}};
  Side server{TlsTransport::Server(*server_context), {}};
  Pump(client, server);
  ASSERT_EQ(client.tls->state(), TlsState::kOpen);
  client.session.output.assign(3u << 20, 'x');
  client.session.closing = true;
  std::string out;
  client.tls->TakeOutput(client.session, out);
  EXPECT_LE(out.size(), 80u * 1024);
  EXPECT_GT(out.size(), 32u * 1024);
  EXPECT_EQ(client.session.output.size(), (3u << 20) - 64 * 1024);
  EXPECT_FALSE(client.tls->WantsClose(client.session));  // Not before the rest went out.
  server.tls->OnReceived(out, server.session);
  Pump(client, server);
  EXPECT_EQ(server.session.received.size(), 3u << 20);
  EXPECT_EQ(client.tls->state(), TlsState::kClosed);  // close_notify after the last byte.
  EXPECT_TRUE(server.session.ended);
}

// Next hops are chosen by outsiders: a session with a huge chain is not kept, and a usual one
// costs its serialized size.
TEST_F(TlsTest, CachedSessionsStaySmall) {
  CertificateFiles big{*dir_ + "/big.pem", *dir_ + "/big.key"};
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) {
    names.push_back("name-" + std::to_string(i) + ".padding-padding-padding.attacker.example");
  }
  ASSERT_TRUE(MakeSelfSignedCertificate("ecdsa", names, 30, big.chain_path, big.key_path).ok());
  auto attacker = MakeServer({big}, TicketKeysOptions{std::string(32, 'a'), 3600});
  auto usual = MakeServer({*ecdsa_}, TicketKeysOptions{std::string(32, 'u'), 3600});
  auto client_context = MakeClient("");
  constexpr int kDestinations = 50;
  auto fill = [&](ServerContext& server_context, const std::string& prefix) {
    const size_t before = mallinfo2().uordblks;
    for (int i = 0; i < kDestinations; ++i) {
      const std::string host = prefix + std::to_string(i) + ".example";
      Side client{TlsTransport::Client(*client_context, host, VerifyMode::kNone, host + ":25"), {}};
      Side server{TlsTransport::Server(server_context), {}};
      server.session.echo = true;
      client.session.output = "EHLO x\r\n";
      Pump(client, server);
      EXPECT_EQ(client.tls->state(), TlsState::kOpen);
    }
    return static_cast<double>(mallinfo2().uordblks - before) / kDestinations;
  };
  const double big_entry = fill(*attacker, "mx");
  EXPECT_EQ(client_context->cached_sessions(), 0u);
  const double usual_entry = fill(*usual, "ok");
  EXPECT_EQ(client_context->cached_sessions(), static_cast<size_t>(kDestinations));
  std::printf("cached client session: %.0f bytes (huge chain: %.0f, not kept)\n", usual_entry,
              big_entry);
  if (!kUnderAsan) {
    EXPECT_LT(usual_entry, 4 * 1024);
    EXPECT_LT(big_entry, 1024);
  }
}

TEST_F(TlsTest, ClientSessionCacheIsBounded) {
  auto server_context = MakeServer({*ecdsa_}, TicketKeysOptions{std::string(32, 's'), 3600});
  ClientOptions options;
  options.ca_file = "";
  options.session_cache_max = 3;
  auto client_context = *ClientContext::Create(options);
  for (int i = 0; i < 6; ++i) {
    Connect(*client_context, *server_context, "mx" + std::to_string(i));
  }
  EXPECT_EQ(client_context->cached_sessions(), 3u);
  EXPECT_TRUE(Connect(*client_context, *server_context, "mx5").resumed_client);
  EXPECT_FALSE(Connect(*client_context, *server_context, "mx0").resumed_client);
}

class PumpOwner final : public net::StreamPumpOwner {
 public:
  void OnPumpReady(net::StreamPump& pump) override { pump.Drive(); }
  void OnPumpClosed(net::StreamPump& pump) override {
    closed = true;
    end = pump.end();
  }
  bool closed = false;
  net::PumpEnd end = net::PumpEnd::kOpen;
};

// The server transport on the real pump over the fake socket; the test plays the client.
TEST_F(TlsTest, OverTheStreamPump) {
  auto server_context = MakeServer({*ecdsa_});
  auto client_context = MakeClient();
  io::FakeNet fake_net(4096);  // Small receives: records arrive in pieces.
  const io::Socket socket = fake_net.Connected();
  Session server_session;
  server_session.echo = true;
  server_session.close_on_end = true;
  PumpOwner owner;
  net::StreamPump pump(fake_net, socket, server_session, owner, nullptr);
  auto server_tls = TlsTransport::Server(*server_context);
  pump.SetTransport(*server_tls);
  fake_net.SetSendBytesMax(socket, 1000);  // Short sends too.
  pump.Drive();

  Side client{TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kVerify, ""),
              {}};
  std::string line(10000, 'x');
  client.session.output = line + "\r\n";
  auto exchange = [&] {
    for (int i = 0; i < 1000; ++i) {
      std::string out;
      client.tls->TakeOutput(client.session, out);
      if (!out.empty()) {
        fake_net.PeerSends(socket, out);
      }
      const size_t steps = fake_net.RunUntilIdle();
      const std::string in = fake_net.TakeSent(socket);
      if (!in.empty()) {
        client.tls->OnReceived(in, client.session);
      }
      if (out.empty() && steps == 0 && in.empty()) {
        return;
      }
    }
  };
  exchange();
  ASSERT_EQ(client.tls->state(), TlsState::kOpen) << client.tls->failure();
  EXPECT_EQ(server_tls->state(), TlsState::kOpen);
  EXPECT_TRUE(server_tls->TakeHandshakeDone());
  EXPECT_EQ(client.session.received, line + "\r\n");
  client.session.closing = true;
  exchange();
  EXPECT_TRUE(owner.closed);
  EXPECT_EQ(owner.end, net::PumpEnd::kSessionClosed);
  EXPECT_EQ(server_tls->state(), TlsState::kClosed);
  EXPECT_TRUE(fake_net.closed(socket));
}

// What an idle established connection holds on the heap (glibc's count; not under ASan, whose
// allocator glibc does not see).
TEST_F(TlsTest, IdleConnectionMemory) {
  auto server_context = MakeServer({*ecdsa_}, TicketKeysOptions{std::string(32, 's'), 3600});
  auto client_context = MakeClient("");
  constexpr int kPairs = 200;
  std::vector<std::unique_ptr<Side>> clients;
  std::vector<std::unique_ptr<Side>> servers;
  const size_t before = mallinfo2().uordblks;
  for (int i = 0; i < kPairs; ++i) {
    clients.push_back(std::make_unique<Side>());
    servers.push_back(std::make_unique<Side>());
    clients.back()->tls =
        TlsTransport::Client(*client_context, "mail.example.com", VerifyMode::kNone, "");
    servers.back()->tls = TlsTransport::Server(*server_context);
    clients.back()->session.output = "EHLO x\r\n";
    servers.back()->session.output = "250 ok\r\n";
    Pump(*clients.back(), *servers.back());
    clients.back()->session.received.clear();
    servers.back()->session.received.clear();
    std::string().swap(clients.back()->session.received);
    std::string().swap(servers.back()->session.received);
  }
  const size_t established = mallinfo2().uordblks;
  clients.clear();
  const size_t servers_only = mallinfo2().uordblks;
  servers.clear();
  const size_t after = mallinfo2().uordblks;
  const double client_bytes = static_cast<double>(established - servers_only) / kPairs;
  const double server_bytes = static_cast<double>(servers_only - after) / kPairs;
  std::printf(
      "idle TLS connection: server %.0f bytes, client %.0f bytes (%d pairs; %zu before, "
      "%zu after)\n",
      server_bytes, client_bytes, kPairs, before, after);
  RecordProperty("idle_server_bytes", static_cast<int>(server_bytes));
  RecordProperty("idle_client_bytes", static_cast<int>(client_bytes));
  if (!kUnderAsan) {
    EXPECT_LT(server_bytes, 16 * 1024);
  }
}

}  // namespace
}  // namespace relais::tls
