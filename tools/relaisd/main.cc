// relaisd — the Relais daemon. Loads the config, checks io_uring, opens the listeners,
// recovers each shard's spool, then runs one pinned thread per shard until SIGTERM/SIGINT.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/base/strings.h"
#include "core/config/config.h"
#include "core/io/durable_dirs.h"
#include "core/io/posix_io.h"
#include "core/log/log.h"
#include "core/mail/message_id.h"
#include "core/net/listener.h"
#include "core/uring/engine.h"
#include "core/uring/mesh.h"
#include "protocols/authcheck/authcheck.h"
#include "tools/relaisd/admin_socket.h"
#include "tools/relaisd/connection_limiter.h"
#include "tools/relaisd/egress.h"
#include "tools/relaisd/recipient_policy.h"
#include "tools/relaisd/secure_random.h"
#include "tools/relaisd/shard.h"

namespace relais::relaisd {
namespace {

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
    return absl::UnavailableError(base::StrCat("spool lock ", path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(fd);
    return absl::FailedPreconditionError(
        error == EWOULDBLOCK ? base::StrCat("spool ", spool_path, " is in use by another relaisd")
                             : base::StrCat("spool lock ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

constexpr char kUsage[] =
    "usage: relaisd [--config FILE] [--threads N] [--check-config] [--print-default-config]\n"
    "  --config FILE           TOML configuration (default: built-in, see\n"
    "                          --print-default-config)\n"
    "  --threads N             shards to run (default: server.threads, 0 = one per CPU)\n"
    "  --check-config          validate the configuration and exit\n"
    "  --print-default-config  print the built-in configuration as TOML and exit\n";

int Fail(std::string_view what) {
  std::fprintf(stderr, "relaisd: %.*s\n", static_cast<int>(what.size()), what.data());
  return 1;
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
rlim_t RaiseDescriptorLimit() {
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
  return limit.rlim_cur;
}

// limits.receive_bytes_max = 0: a quarter of the memory this process may use (the machine's,
// or its cgroup's memory.max when lower) for messages being received, split over the shards,
// between 16 MiB and 1 GiB per shard, and never less than one largest message. Read once at
// startup.
uint64_t DefaultReceiveBytesMax(uint32_t shards, uint64_t message_bytes_max) {
  uint64_t memory =
      static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (FILE* f = std::fopen("/sys/fs/cgroup/memory.max", "r"); f != nullptr) {
    unsigned long long limit = 0;
    if (std::fscanf(f, "%llu", &limit) == 1 && limit > 0 && limit < memory) {
      memory = limit;  // "max" (no limit) does not scan as a number.
    }
    std::fclose(f);
  }
  const uint64_t share = memory / 4 / std::max<uint32_t>(1, shards);
  // A message is held in 256 KiB chunks after its first 64 KiB: one more MiB covers the slack.
  return std::max(std::clamp<uint64_t>(share, uint64_t{16} << 20, uint64_t{1} << 30),
                  message_bytes_max + (uint64_t{1} << 20));
}

int Main(int argc, char** argv) {
  log::SetFd(STDOUT_FILENO);  // JSON events on stdout; usage and fatal errors on stderr.
  std::string config_path;
  int64_t threads_flag = -1;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg == "--threads" && i + 1 < argc) {
      char* end = nullptr;
      threads_flag = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || threads_flag < 1 || threads_flag > 256) {
        return Fail("--threads takes a number from 1 to 256");
      }
    } else if (arg == "--check-config") {
      check_only = true;
    } else if (arg == "--print-default-config") {
      std::fputs(config::DefaultToml().c_str(), stdout);
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  auto loaded = config_path.empty() ? config::QuickStart() : config::LoadFile(config_path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "relaisd: %s\n", std::string(loaded.status().message()).c_str());
    return 2;
  }
  const config::Config& config = *loaded;
  if (check_only) {
    std::printf("%s: configuration OK\n",
                config_path.empty() ? "built-in quick-start config" : config_path.c_str());
    return 0;
  }
  if (absl::Status s = uring::Probe(); !s.ok()) {
    return Fail(base::StrCat(s.message()));
  }
  const std::vector<int> cpus = AllowedCpus();
  const uint32_t shards = threads_flag > 0     ? static_cast<uint32_t>(threads_flag)
                          : config.threads > 0 ? config.threads
                                               : static_cast<uint32_t>(cpus.size());

  if (!config.log_file.empty()) {
    if (const std::string error = log::OpenFile(config.log_file); !error.empty()) {
      return Fail(error);
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
  log::SetChannelBytesMax(config.log_queue_bytes_max);
  log::StartWriter();
  uint64_t id_key[2];
  SecureRandomFill(id_key, sizeof(id_key));  // Queue IDs must not reveal a shard's count.
  mail::SetMessageIdKey(id_key[0], id_key[1]);
  const int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (signal_fd < 0) {
    return Fail(base::StrCat("signalfd: ", std::strerror(errno)));
  }

  if (absl::Status s = LockSpool(config.spool_path); !s.ok()) {
    return Fail(base::StrCat(s.message()));
  }
  auto admin_fd = OpenAdminSocket(config.admin_socket);
  if (!admin_fd.ok()) {
    return Fail(base::StrCat(admin_fd.status().message()));
  }
  auto listeners = OpenListeners(config.listen, shards);
  if (!listeners.ok()) {
    return Fail(base::StrCat(listeners.status().message()));
  }
  std::optional<Listeners> metrics_listener;
  if (!config.metrics_listen.empty()) {
    auto opened = OpenListeners({config.metrics_listen}, 1);
    if (!opened.ok()) {
      return Fail(base::StrCat("metrics: ", opened.status().message()));
    }
    metrics_listener = std::move(*opened);
  }
  // One metrics block per shard, each on cache lines of its own; read by the endpoint.
  std::vector<std::unique_ptr<ShardMetrics>> metrics_blocks;
  std::vector<const ShardMetrics*> all_metrics;
  for (uint32_t i = 0; i < shards; ++i) {
    metrics_blocks.push_back(std::make_unique<ShardMetrics>());
    all_metrics.push_back(metrics_blocks.back().get());
  }
  ConnectionLimiter limiter(config.connections_max, config.connections_per_ip_max,
                            config.connections_per_ip_exempt_relay_networks
                                ? config.relay_networks
                                : std::vector<mail::IpNetwork>{});
  // Session slots per shard: connections_max could all land on one shard, and refused clients
  // hold a slot for their 421 until they leave; the kernel caps a table at the descriptor limit
  // (and 2^20 entries).
  constexpr uint64_t kRefusalSlots = 1024;
  const rlim_t descriptor_limit = RaiseDescriptorLimit();
  const auto session_slots = static_cast<uint32_t>(
      std::min<uint64_t>({uint64_t{config.connections_max} + kRefusalSlots,
                          static_cast<uint64_t>(descriptor_limit), uint64_t{1} << 20}));
  const routing::Router router(config.routes, config.hostname);
  const RouterPolicy policy(router);
  const auto destinations = ResolveDestinations(router.routes());
  if (!destinations.ok()) {
    return Fail(base::StrCat(destinations.status().message()));
  }
  uring::Mesh mesh(shards, 10);

  ShardOptions base;
  base.count = shards;
  base.connections_per_shard_hard_max = session_slots;
  base.shutdown_grace_ms = config.shutdown_grace_ms;
  smtp::SessionOptions& so = base.session;
  so.hostname = config.hostname;
  so.command_line_bytes_max = config.command_line_bytes_max;
  so.text_line_bytes_max = config.text_line_bytes_max;
  so.message_bytes_max = config.message_bytes_max;
  so.recipients_max = config.recipients_max;
  so.errors_max = config.errors_max;
  so.pipeline_bytes_max = config.pipeline_bytes_max;
  so.command_timeout_ms = config.command_timeout_ms;
  so.data_timeout_ms = config.data_timeout_ms;
  so.local_domains = config.local_domains;
  so.relay_domains = config.relay_domains;
  so.relay_networks = config.relay_networks;
  so.allow_untrusted_routing = config.allow_untrusted_routing;
  so.recipient_policy = &policy;
  base.receive_bytes_max = config.receive_bytes_max != 0
                               ? config.receive_bytes_max
                               : DefaultReceiveBytesMax(shards, config.message_bytes_max);
  base.data_deadline_ms = config.data_deadline_ms;
  base.data_deadline_stress_ms = config.data_deadline_stress_ms;
  base.data_rate_min = config.data_rate_min;
  base.stress_connections = config.connections_max / 2;  // Past half: under stress.
  base.router = &router;
  base.destinations = &*destinations;
  base.recipients_per_transaction_max = config.recipients_per_transaction_max;
  base.maildir_directories_known_max = config.maildir_directories_known_max;
  base.delay_warning_ms = config.delay_warning_ms;
  base.log_file = config.log_file;
  EgressOptions& eo = base.egress;
  eo.connect_timeout_ms = config.connect_timeout_ms;
  eo.reply_timeout_ms = config.reply_timeout_ms;
  eo.data_init_timeout_ms = config.data_init_timeout_ms;
  eo.data_block_timeout_ms = config.data_block_timeout_ms;
  eo.data_end_timeout_ms = config.data_end_timeout_ms;
  eo.idle_timeout_ms = config.idle_timeout_ms;
  // The cap is for all shards together; each shard keeps at least one connection.
  eo.connections_max = std::max<uint32_t>(1, config.connections_per_destination_max / shards);
  eo.messages_per_connection_max = config.messages_per_connection_max;
  eo.mime_nesting_max = config.mime_nesting_max;
  base.scheduler.retry_first_ms = config.retry_first_ms;
  base.scheduler.retry_max_ms = config.retry_max_ms;
  base.scheduler.lifetime_ms = config.lifetime_ms;
  base.scheduler.attempts_in_flight_max = config.attempts_in_flight_max;
  base.spool.path = config.spool_path;
  base.spool.shard_count = static_cast<uint16_t>(shards);
  base.spool.segment_bytes_max = config.segment_bytes_max;
  base.spool.spool_bytes_max = config.spool_bytes_max;
  base.spool.body_memory_bytes_max = config.body_memory_bytes_max;
  // Config words were validated when it was parsed.
  for (const std::string& address : config.listen) {
    authcheck::Policy p;
    p.authserv_id = config.authserv_id;
    std::string spf = config.auth_spf, dkim = config.auth_dkim, dmarc = config.auth_dmarc;
    std::string temperror = config.auth_temperror;
    for (const config::AuthListener& l : config.auth_listeners) {
      if (l.listen == address) {
        spf = l.spf.value_or(spf);
        dkim = l.dkim.value_or(dkim);
        dmarc = l.dmarc.value_or(dmarc);
        temperror = l.temperror.value_or(temperror);
      }
    }
    p.spf = *authcheck::ParseMode(spf);
    p.dkim = *authcheck::ParseMode(dkim);
    p.dmarc = *authcheck::ParseMode(dmarc);
    p.defer_temperror = temperror == "defer";
    p.dkim_signatures_max = config.auth_dkim_signatures_max;
    p.dmarc_temperror = *authcheck::ParseTempErrorAction(config.auth_dmarc_temperror);
    base.auth_by_listener.push_back(std::move(p));
  }
  base.auth_skip_networks = config.auth_skip_networks;
  base.header_limits = {config.header_bytes_max, config.header_fields_max, config.received_max};
  base.dns.servers = config.dns_servers;
  base.dns.timeout_ms = config.dns_timeout_ms;
  base.dns.tries = config.dns_tries;
  base.dns.cache_entries_max = config.dns_cache_entries_max;

  // DKIM signing keys, loaded once per shard so that no key is shared between threads.
  std::vector<std::vector<authcheck::SigningKey>> signing_keys(shards);
  for (const config::DkimSigning& d : config.dkim_sign) {
    std::ifstream in(d.key_file, std::ios::binary);
    if (!in) {
      return Fail(
          base::StrCat("dkim_sign: cannot read key ", d.key_file, ": ", std::strerror(errno)));
    }
    std::stringstream pem;
    pem << in.rdbuf();
    for (uint32_t i = 0; i < shards; ++i) {
      absl::StatusOr<tls::PrivateKey> key = tls::PrivateKey::FromPem(pem.str());
      if (!key.ok()) {
        return Fail(base::StrCat("dkim_sign: key ", d.key_file, ": ", key.status().message()));
      }
      authcheck::SigningKey k{{}, std::move(*key)};
      k.options.domain = d.domain;
      k.options.selector = d.selector;
      const size_t slash = d.canonicalization.find('/');
      k.options.header_canonicalization = d.canonicalization.substr(0, slash) == "relaxed"
                                              ? dkim::Canonicalization::kRelaxed
                                              : dkim::Canonicalization::kSimple;
      k.options.body_canonicalization = d.canonicalization.substr(slash + 1) == "relaxed"
                                            ? dkim::Canonicalization::kRelaxed
                                            : dkim::Canonicalization::kSimple;
      if (!d.headers.empty()) {
        k.options.headers = d.headers;
      }
      signing_keys[i].push_back(std::move(k));
    }
  }

  std::atomic<uint32_t> shards_running{shards};
  base.shards_running = &shards_running;
  std::vector<std::unique_ptr<Shard>> all;
  for (uint32_t i = 0; i < shards; ++i) {
    ShardOptions options = base;
    options.index = i;
    options.spool.shard = static_cast<uint16_t>(i);
    options.metrics = metrics_blocks[i].get();
    options.all_metrics = &all_metrics;
    options.signing_keys = &signing_keys[i];
    auto shard = Shard::Create(options, listeners->fds_by_shard[i], limiter, mesh);
    if (!shard.ok()) {
      return Fail(base::StrCat("shard ", i, ": ", shard.status().message()));
    }
    all.push_back(std::move(*shard));
  }
  all[0]->WatchSignals(signal_fd);
  all[0]->ServeAdmin(*admin_fd);
  if (metrics_listener) {
    // OpenListeners made one SO_REUSEPORT socket per shard asked for: here, one.
    all[0]->ServeMetrics(metrics_listener->fds_by_shard[0][0], config.metrics_request_timeout_ms);
    log::Emit(log::Level::kInfo, -1, "metrics_listening",
              {{"address", metrics_listener->bound[0]}});
  }
  for (const std::string& address : listeners->bound) {
    log::Emit(log::Level::kInfo, -1, "listening", {{"address", address}});
  }
  log::Emit(log::Level::kInfo, -1, "ready",
            {{"shards", shards},
             {"hostname", config.hostname},
             {"spool", config.spool_path},
             {"session_slots_per_shard", session_slots},
             {"receive_bytes_max_per_shard", base.receive_bytes_max},
             {"descriptor_limit", static_cast<uint64_t>(descriptor_limit)}});

  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < shards; ++i) {
    threads.emplace_back([&, i] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus[i % cpus.size()], &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
      const std::string name = base::StrCat("relais-shard-", i);
      pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
      all[i]->Run();
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  unlink(config.admin_socket.c_str());
  log::Emit(log::Level::kInfo, -1, "stopped", {});
  return 0;
}

}  // namespace
}  // namespace relais::relaisd

int main(int argc, char** argv) { return relais::relaisd::Main(argc, argv); }
