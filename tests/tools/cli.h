// Runs the sptelab binary as a subprocess and captures what it says.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace sptelab::tools::testing {

struct CliResult {
  int status = -1;  // exit status, or -1 if it did not exit normally
  int pid = 0;      // the process it was
  std::string out;
  std::string err;
};

struct CliControl {
  std::string stdout_path;  // where stdout goes (e.g. /dev/full); empty: captured in out
  int signal = 0;           // sent signal_after_ms after the start, if not 0
  int signal_after_ms = 0;
};

// env: variables to set (an empty value unsets the variable).
CliResult run_sptelab(const std::vector<std::string>& args,
                      const std::map<std::string, std::string>& env = {},
                      const CliControl& control = {});

}  // namespace sptelab::tools::testing
