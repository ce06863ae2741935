// tools/relais-bench/commands.h — the subcommands of relais-bench. Each takes the arguments
// after its name and returns the process exit status (0 done, 1 the run failed, 2 bad usage,
// 3 messages were lost).
#pragma once

#include <string>
#include <vector>

namespace relais::bench {

int RunSend(const std::vector<std::string>& args);
int RunSink(const std::vector<std::string>& args);
int RunReport(const std::vector<std::string>& args);

// Set by SIGINT/SIGTERM: the running command winds down and writes its summary.
[[nodiscard]] bool StopRequested();
void InstallStopHandlers();

}  // namespace relais::bench
