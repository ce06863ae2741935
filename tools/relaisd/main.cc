// relaisd — the Relais daemon. Loads the config, checks io_uring, opens the listeners,
// recovers each shard's spool, then runs one pinned thread per shard until SIGTERM/SIGINT.
// Each step is a function of tools/relaisd/startup.h; the config is tools/relaisd/config_schema.h.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "core/base/strings.h"
#include "core/log/log.h"
#include "tools/cli/args.h"
#include "tools/relaisd/config_schema.h"
#include "tools/relaisd/startup.h"

ABSL_FLAG(std::string, config, "", "TOML configuration (default: built-in)");
ABSL_FLAG(int32_t, threads, 0, "shards to run (default: server.threads, 0 = one per CPU)");
ABSL_FLAG(bool, check_config, false, "validate the configuration and exit");
ABSL_FLAG(bool, print_default_config, false, "print the built-in configuration as TOML and exit");

namespace relais::relaisd {
namespace {

constexpr char kUsage[] =
    "usage: relaisd [--config FILE] [--threads N] [--check-config] [--print-default-config]\n"
    "  --config FILE           TOML configuration (default: built-in, see\n"
    "                          --print-default-config)\n"
    "  --threads N             shards to run (default: server.threads, 0 = one per CPU)\n"
    "  --check-config          validate the configuration and exit\n"
    "  --print-default-config  print the built-in configuration as TOML and exit\n";

constexpr std::string_view kFlags[] = {"config", "threads", "check-config", "print-default-config"};

int Fail(std::string_view what) {
  std::fprintf(stderr, "relaisd: %.*s\n", static_cast<int>(what.size()), what.data());
  return 1;
}
int Fail(const absl::Status& status) { return Fail(base::StrCat(status.message())); }

// Reads the command line into the FLAGS_ values. Returns the exit status when the flags end
// the run: --help or -h (0), --print-default-config (0), a bad --threads (1), bad usage (2).
std::optional<int> ReadFlags(int argc, char** argv) {
  absl::StatusOr<cli::Args> args = cli::Parse({argv + 1, argv + argc}, kFlags);
  if (args.ok() && absl::GetFlag(FLAGS_print_default_config)) {
    std::fputs(DefaultToml().c_str(), stdout);
    return 0;
  }
  if (args.ok() && (args->help || std::count(args->positional.begin(), args->positional.end(),
                                             std::string("-h")) > 0)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const int32_t threads = absl::GetFlag(FLAGS_threads);
  const bool threads_unparsed = !args.ok() &&
                                args.status().code() == absl::StatusCode::kOutOfRange &&
                                std::string(args.status().message()).starts_with("--threads");
  if (threads_unparsed ||
      (args.ok() && args->given.contains("threads") && (threads < 1 || threads > 256))) {
    return Fail("--threads takes a number from 1 to 256");
  }
  if (!args.ok() || !args->positional.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  return std::nullopt;
}

int Main(int argc, char** argv) {
  log::SetFd(STDOUT_FILENO);  // JSON events on stdout; usage and fatal errors on stderr.
  if (std::optional<int> exit_status = ReadFlags(argc, argv)) {
    return *exit_status;
  }
  // 1. Load the config: exit 2 on a bad file, naming key and line.
  const std::string config_path = absl::GetFlag(FLAGS_config);
  absl::StatusOr<Config> config = config_path.empty() ? QuickStart() : LoadConfigFile(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "relaisd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_check_config)) {
    std::printf("%s: configuration OK\n",
                config_path.empty() ? "built-in quick-start config" : config_path.c_str());
    return 0;
  }
  // 2. Check the environment: io_uring, CPUs, log, signals, the spool's lock.
  absl::StatusOr<Environment> env =
      CheckEnvironment(*config, static_cast<uint32_t>(absl::GetFlag(FLAGS_threads)));
  if (!env.ok()) {
    return Fail(env.status());
  }
  // 3. Open the admin socket, 4. bind the SMTP and metrics listeners.
  absl::StatusOr<int> admin_fd = OpenAdminSocket(*config);
  if (!admin_fd.ok()) {
    return Fail(admin_fd.status());
  }
  absl::StatusOr<Sockets> sockets = BindListeners(*config, *env, *admin_fd);
  if (!sockets.ok()) {
    return Fail(sockets.status());
  }
  // 5. Create the shards (each recovers its spool), 6. run them until a stop, 7. stop.
  absl::StatusOr<std::unique_ptr<Shards>> shards = CreateShards(*config, *env, *sockets);
  if (!shards.ok()) {
    return Fail(shards.status());
  }
  Run(**shards, *env);
  Stop(*config);
  return 0;
}

}  // namespace
}  // namespace relais::relaisd

int main(int argc, char** argv) { return relais::relaisd::Main(argc, argv); }
