// tools/relais-bench/main.cc — relais-bench: load generator (send), counting sink (sink) and
// run reports (report) for SMTP and LMTP servers, Relais or any other.
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "tools/relais-bench/commands.h"

namespace relais::bench {
namespace {

volatile std::sig_atomic_t stop_requested = 0;

void OnStopSignal(int /*signal*/) { stop_requested = 1; }

constexpr const char* kUsage =
    "usage: relais-bench send|sink|report [flags]   (relais-bench COMMAND --help for each)\n"
    "  send    drive an SMTP/LMTP server with load; latency percentiles, loss check\n"
    "  sink    a counting SMTP/LMTP sink with chosen replies, delays and drops\n"
    "  report  Markdown table and PNG plot from the --json files of send runs\n";

}  // namespace

bool StopRequested() { return stop_requested != 0; }

void InstallStopHandlers() {
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

}  // namespace relais::bench

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(relais::bench::kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "send") {
    return relais::bench::RunSend(args);
  }
  if (command == "sink") {
    return relais::bench::RunSink(args);
  }
  if (command == "report") {
    return relais::bench::RunReport(args);
  }
  if (command == "--help" || command == "help") {
    std::fputs(relais::bench::kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "relais-bench: unknown command '%s'\n%s", command.c_str(),
               relais::bench::kUsage);
  return 2;
}
