#include "tools/relaisd/startup.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/base/strings.h"
#include "core/config/config.h"
#include "core/io/durable_dirs.h"
#include "core/io/posix_io.h"
#include "core/log/log.h"
#include "core/mail/message_id.h"
#include "core/net/net_address.h"
#include "core/uring/engine.h"
#include "tools/relaisd/admin_socket.h"
#include "tools/relaisd/egress.h"
#include "tools/relaisd/secure_random.h"

namespace relais::relaisd {
namespace {

using base::StrCat;

// One daemon per spool. The lock is held for the life of the process (the descriptor is never
// closed) and the kernel drops it the moment the process ends, kill -9 included.
absl::Status LockSpool(const std::string& spool_path) {
  io::PosixIo io;
  // The spool directory may exist without being durable (an installer made it a moment ago,
  // or a killed run between its mkdir and the parent's fsync): each component's parent is
  // synced here whether it was made now or found. Each shard's spool does the same for its
  // own directory before its first segment.
  if (absl::Status s = io::DurableDirs(io).Ensure(spool_path); !s.ok()) {
    return s;
  }
  const std::string path = spool_path + "/relaisd.lock";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(StrCat("spool lock ", path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(fd);
    return absl::FailedPreconditionError(
        error == EWOULDBLOCK ? StrCat("spool ", spool_path, " is in use by another relaisd")
                             : StrCat("spool lock ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int i = 0; i < CPU_SETSIZE; ++i) {
      if (CPU_ISSET(i, &set)) {
        cpus.push_back(i);
      }
    }
  }
  if (cpus.empty()) {
    cpus.push_back(0);
  }
  return cpus;
}

// Raises the soft descriptor limit to the hard one and returns it. Each shard's sessions live
// in its io_uring's registered-file table, which the kernel sizes no larger than this limit;
// spool segments, outbound connections and DNS sockets are plain descriptors under it.
uint64_t RaiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return 1024;
  }
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      limit = raised;
    }
  }
  return static_cast<uint64_t>(limit.rlim_cur);
}

// The memory this process may use: the machine's, or its cgroup's memory.max when lower.
// Read once at startup.
uint64_t MemoryBytes() {
  uint64_t memory =
      static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (FILE* f = std::fopen("/sys/fs/cgroup/memory.max", "r"); f != nullptr) {
    unsigned long long limit = 0;
    if (std::fscanf(f, "%llu", &limit) == 1 && limit > 0 && limit < memory) {
      memory = limit;  // "max" (no limit) does not scan as a number.
    }
    std::fclose(f);
  }
  return memory;
}

// Each [[dkim_sign]] key, parsed once per shard: those without users into `keys`, those with
// users into `user_keys`.
absl::Status LoadSigningKeys(const Config& config, uint32_t shards,
                             std::vector<std::vector<authcheck::SigningKey>>& keys,
                             std::vector<std::vector<UserSigningKey>>& user_keys) {
  keys.clear();
  keys.resize(shards);
  user_keys.clear();
  user_keys.resize(shards);
  for (const DkimSigning& d : config.dkim_sign) {
    std::ifstream in(d.key_file, std::ios::binary);
    if (!in) {
      return absl::NotFoundError(
          StrCat("dkim_sign: cannot read key ", d.key_file, ": ", std::strerror(errno)));
    }
    std::stringstream pem;
    pem << in.rdbuf();
    for (uint32_t i = 0; i < shards; ++i) {
      absl::StatusOr<crypto::PrivateKey> key = crypto::PrivateKey::FromPem(pem.str());
      if (!key.ok()) {
        return absl::InvalidArgumentError(
            StrCat("dkim_sign: key ", d.key_file, ": ", key.status().message()));
      }
      authcheck::SigningKey signing{d.options, std::move(*key)};
      if (d.users.empty()) {
        keys[i].push_back(std::move(signing));
      } else {
        user_keys[i].push_back(UserSigningKey{d.users, std::move(signing)});
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Environment> CheckEnvironment(const Config& config, uint32_t threads_flag) {
  if (absl::Status s = uring::Probe(); !s.ok()) {
    return s;
  }
  Environment env;
  env.cpus = AllowedCpus();
  env.shards = threads_flag > 0            ? threads_flag
               : config.daemon.threads > 0 ? config.daemon.threads
                                           : static_cast<uint32_t>(env.cpus.size());
  if (!config.shard.log_file.empty()) {
    if (const std::string error = log::OpenFile(config.shard.log_file); !error.empty()) {
      return absl::UnavailableError(error);
    }
  }
  // Signals are taken synchronously by shard 0 through a signalfd; every thread blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);  // Reopen the log file.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // From here on one thread writes the log output, fed by every other (core/log).
  log::SetChannelBytesMax(config.daemon.log_queue_bytes_max);
  log::StartWriter();
  uint64_t id_key[2];
  SecureRandomFill(id_key, sizeof(id_key));  // Queue IDs must not reveal a shard's count.
  mail::SetMessageIdKey(id_key[0], id_key[1]);
  env.signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (env.signal_fd < 0) {
    return absl::UnavailableError(StrCat("signalfd: ", std::strerror(errno)));
  }
  if (absl::Status s = LockSpool(config.shard.spool.path); !s.ok()) {
    return s;
  }
  env.descriptor_limit = RaiseDescriptorLimit();
  env.memory_bytes = MemoryBytes();
  return env;
}

absl::StatusOr<int> OpenAdminSocket(const Config& config) {
  return OpenAdminSocket(config.daemon.admin_socket);
}

absl::StatusOr<Sockets> BindListeners(const Config& config, const Environment& env, int admin_fd) {
  Sockets sockets;
  sockets.admin_fd = admin_fd;
  auto smtp = net::OpenListeners(config.daemon.listen, env.shards);
  if (!smtp.ok()) {
    return smtp.status();
  }
  sockets.smtp = std::move(*smtp);
  if (!config.daemon.metrics_listen.empty()) {
    auto metrics = net::OpenListeners({config.daemon.metrics_listen}, 1);
    if (!metrics.ok()) {
      return absl::Status(metrics.status().code(), StrCat("metrics: ", metrics.status().message()));
    }
    sockets.metrics = std::move(*metrics);
  }
  return sockets;
}

uint64_t DefaultReceiveBytesMax(uint64_t memory_bytes, uint32_t shards,
                                uint64_t message_bytes_max) {
  const uint64_t share = memory_bytes / 4 / std::max<uint32_t>(1, shards);
  // A message is held in 256 KiB chunks after its first 64 KiB: one more MiB covers the slack.
  return std::max(std::clamp<uint64_t>(share, uint64_t{16} << 20, uint64_t{1} << 30),
                  message_bytes_max + (uint64_t{1} << 20));
}

uint32_t SessionSlots(const Config& config, uint64_t descriptor_limit) {
  constexpr uint64_t kRefusalSlots = 1024;
  return static_cast<uint32_t>(
      std::min<uint64_t>({uint64_t{config.daemon.connections_max} + kRefusalSlots, descriptor_limit,
                          uint64_t{1} << 20}));
}

absl::StatusOr<std::string> TicketSecret(const Config& config) {
  constexpr size_t kSecretBytesMin = 32, kSecretBytesMax = 4096;
  if (config.tls.certificates.empty()) {
    return std::string();
  }
  const std::string& path = config.tls.ticket_secret_file;
  if (path.empty()) {
    // One secret for this run, given to every shard: a ticket one shard issued resumes on any.
    std::string secret(kSecretBytesMin, '\0');
    SecureRandomFill(secret.data(), secret.size());
    return secret;
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        StrCat("tls.ticket_secret_file: cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  std::string secret(kSecretBytesMax + 1, '\0');
  ssize_t n = -1;
  if (fstat(fd, &st) == 0) {
    n = read(fd, secret.data(), secret.size());
  }
  const int error = errno;
  close(fd);
  if (n < 0) {
    return absl::UnavailableError(
        StrCat("tls.ticket_secret_file: cannot read ", path, ": ", std::strerror(error)));
  }
  if ((st.st_mode & 077) != 0) {
    // Whoever reads it can decrypt every resumed session's keys.
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 0777));
    return absl::FailedPreconditionError(StrCat("tls.ticket_secret_file: ", path,
                                                " is open to group or others (mode ", mode,
                                                "): chmod 600 it"));
  }
  if (static_cast<size_t>(n) < kSecretBytesMin || static_cast<size_t>(n) > kSecretBytesMax) {
    return absl::InvalidArgumentError(StrCat("tls.ticket_secret_file: ", path, " holds ", n,
                                             " bytes; it needs 32 to 4096 random bytes (e.g. "
                                             "head -c 48 /dev/urandom)"));
  }
  secret.resize(static_cast<size_t>(n));
  return secret;
}

Shared::Shared(const Config& config)
    : router(config.routes, config.shard.session.hostname),
      policy(router),
      hosts(std::make_shared<const dns::HostsTable>(dns::ReadHostsFile("/etc/hosts"))) {}

absl::StatusOr<std::unique_ptr<const delivery::BounceClassifier>> LoadBounceClassifier(
    const Config& config) {
  const std::string& path = config.mx.class_rules_file;
  std::string rules;
  if (!path.empty()) {
    absl::StatusOr<std::string> text = config::ReadFile(path);
    if (!text.ok()) {
      return absl::Status(text.status().code(),
                          StrCat("bounce.class_rules_file: ", text.status().message()));
    }
    rules = std::move(*text);
  }
  auto classifier = delivery::BounceClassifier::Create(rules);
  if (!classifier.ok()) {
    return absl::Status(classifier.status().code(), StrCat("bounce.class_rules_file ", path, ": ",
                                                           classifier.status().message()));
  }
  return std::unique_ptr<const delivery::BounceClassifier>(std::move(*classifier));
}

ShardOptions BaseShardOptions(const Config& config, const Environment& env, const Shared& shared) {
  ShardOptions base = config.shard;
  base.count = env.shards;
  base.connections_per_shard_hard_max = SessionSlots(config, env.descriptor_limit);
  base.session.recipient_policy = &shared.policy;
  base.receive_bytes_max = config.daemon.receive_bytes_max != 0
                               ? config.daemon.receive_bytes_max
                               : DefaultReceiveBytesMax(env.memory_bytes, env.shards,
                                                        config.shard.session.message_bytes_max);
  base.stress_connections = config.daemon.connections_max / 2;  // Past half: under stress.
  base.router = &shared.router;
  base.destinations = &shared.destinations;
  base.bounce_classifier = shared.bounce_classifier.get();
  base.hosts_per_attempt_max = config.mx.hosts_per_attempt_max;
  base.mx.hosts = shared.hosts;  // Route host names: the hosts file before DNS.
  // The MX loop check (RFC 5321 5.1): this relay is its hostname and the addresses it listens
  // on (a wildcard names no one address; [mx] self_addresses covers NAT and the like).
  const std::string& hostname = config.shard.session.hostname;
  if (!hostname.empty() && std::find(base.mx.self_names.begin(), base.mx.self_names.end(),
                                     base::AsciiStrToLower(hostname)) == base.mx.self_names.end()) {
    base.mx.self_names.push_back(base::AsciiStrToLower(hostname));
  }
  for (const std::string& listen : config.daemon.listen) {
    std::string host, port;
    if (!net::SplitHostPort(listen, host, port, /*allow_port_zero=*/true)) {
      continue;
    }
    std::optional<mail::IpAddress> address = mail::IpAddress::Parse(host);
    const bool wildcard = address && std::all_of(address->bytes.begin(), address->bytes.end(),
                                                 [](uint8_t b) { return b == 0; });
    if (address && !wildcard &&
        std::find(base.mx.self_addresses.begin(), base.mx.self_addresses.end(), *address) ==
            base.mx.self_addresses.end()) {
      base.mx.self_addresses.push_back(*address);
    }
  }
  // The cap is for all shards together; each shard keeps at least one connection.
  base.egress.connections_max =
      std::max<uint32_t>(1, config.daemon.connections_per_destination_max / env.shards);
  base.spool.shard_count = static_cast<uint16_t>(env.shards);
  for (const std::string& address : config.daemon.listen) {
    base.auth_by_listener.push_back(config.AuthFor(address));
    base.listeners.push_back(config.ListenerFor(address));
  }
  for (const TlsCertificate& certificate : config.tls.certificates) {
    base.tls.certificates.push_back({certificate.chain, certificate.key});
  }
  base.tls.tickets.rotation_s = config.tls.ticket_rotation_s;
  base.tls_handshake_timeout_ms = config.tls.handshake_timeout_ms;
  // Outbound TLS (the pools): the same handshake deadline, and how long a "may" next hop whose
  // handshake failed gets plaintext.
  base.egress.tls_handshake_timeout_ms = config.tls.handshake_timeout_ms;
  base.egress.tls_fallback_ttl_ms = uint64_t{config.tls.fallback_ttl_s} * 1000;
  base.login_limits.failures_before_delay = config.smtp_auth.failures_before_delay;
  base.login_limits.lockout_failures = config.smtp_auth.lockout_failures;
  base.login_limits.lockout_time_ms = config.smtp_auth.lockout_time_ms;
  base.require_sender_owned = config.smtp_auth.require_sender_owned;
  return base;
}

Shards::Shards(const Config& config)
    : shared(config),
      limiter(config.daemon.connections_max, config.daemon.connections_per_ip_max,
              config.daemon.connections_per_ip_exempt_relay_networks
                  ? config.shard.session.relay_networks
                  : std::vector<mail::IpNetwork>{}) {}

absl::StatusOr<std::unique_ptr<Shards>> CreateShards(const Config& config, const Environment& env,
                                                     const Sockets& sockets) {
  auto all = std::make_unique<Shards>(config);
  for (uint32_t i = 0; i < env.shards; ++i) {
    all->metrics_blocks.push_back(std::make_unique<ShardMetrics>());
    all->all_metrics.push_back(all->metrics_blocks.back().get());
  }
  auto destinations = MakeRouteTemplates(all->shared.router.routes(),
                                         config.mx.hosts_per_attempt_max, config.shard.sources);
  if (!destinations.ok()) {
    return destinations.status();
  }
  all->shared.destinations = std::move(*destinations);
  auto classifier = LoadBounceClassifier(config);
  if (!classifier.ok()) {
    return classifier.status();
  }
  all->shared.bounce_classifier = std::move(*classifier);
  all->mesh = std::make_unique<uring::Mesh>(env.shards, 10);
  all->base = BaseShardOptions(config, env, all->shared);
  auto secret = TicketSecret(config);
  if (!secret.ok()) {
    return secret.status();
  }
  all->base.tls.tickets.secret = std::move(*secret);
  if (absl::Status s =
          LoadSigningKeys(config, env.shards, all->signing_keys, all->user_signing_keys);
      !s.ok()) {
    return s;
  }
  if (!config.smtp_auth.credentials.empty()) {
    // Read once here (the file is checked: mode, hash schemes; errors name file and line);
    // every shard's verifier reads the same immutable snapshot.
    auto credentials = sasl::Credentials::Load(config.smtp_auth.credentials);
    if (!credentials.ok()) {
      return absl::Status(credentials.status().code(),
                          StrCat("smtp_auth.credentials: ", credentials.status().message()));
    }
    all->base.credentials = std::make_shared<const sasl::Credentials>(std::move(*credentials));
    // One limiter for all shards (auth_verifier.h): thresholds must not multiply by shards.
    all->base.login_limiter = std::make_shared<sasl::LoginLimiter>(all->base.login_limits);
  }
  all->running = env.shards;
  all->base.shards_running = &all->running;
  for (uint32_t i = 0; i < env.shards; ++i) {
    ShardOptions options = all->base;
    options.index = i;
    options.spool.shard = static_cast<uint16_t>(i);
    options.metrics = all->metrics_blocks[i].get();
    options.all_metrics = &all->all_metrics;
    options.signing_keys = &all->signing_keys[i];
    options.user_signing_keys = &all->user_signing_keys[i];
    auto shard = Shard::Create(options, sockets.smtp.fds_by_shard[i], all->limiter, *all->mesh);
    if (!shard.ok()) {
      return absl::Status(shard.status().code(),
                          StrCat("shard ", i, ": ", shard.status().message()));
    }
    all->shards.push_back(std::move(*shard));
  }
  Shard& first = *all->shards[0];
  first.WatchSignals(env.signal_fd);
  first.ServeAdmin(sockets.admin_fd);
  if (sockets.metrics) {
    // OpenListeners made one SO_REUSEPORT socket per shard asked for: here, one.
    first.ServeMetrics(sockets.metrics->fds_by_shard[0][0],
                       config.daemon.metrics_request_timeout_ms);
    log::Emit(log::Level::kInfo, -1, "metrics_listening", {{"address", sockets.metrics->bound[0]}});
  }
  for (const std::string& address : sockets.smtp.bound) {
    log::Emit(log::Level::kInfo, -1, "listening", {{"address", address}});
  }
  log::Emit(log::Level::kInfo, -1, "ready",
            {{"shards", env.shards},
             {"hostname", config.shard.session.hostname},
             {"spool", config.shard.spool.path},
             {"session_slots_per_shard", all->base.connections_per_shard_hard_max},
             {"receive_bytes_max_per_shard", all->base.receive_bytes_max},
             {"descriptor_limit", env.descriptor_limit}});
  return all;
}

void Run(Shards& shards, const Environment& env) {
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < shards.shards.size(); ++i) {
    threads.emplace_back([&, i] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(env.cpus[i % env.cpus.size()], &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
      const std::string name = StrCat("relais-shard-", i);
      pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
      shards.shards[i]->Run();
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
}

void Stop(const Config& config) {
  unlink(config.daemon.admin_socket.c_str());
  log::Emit(log::Level::kInfo, -1, "stopped", {});
}

}  // namespace relais::relaisd
