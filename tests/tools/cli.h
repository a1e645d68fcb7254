// Runs the sptelab binary as a subprocess and captures what it says.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace sptelab::tools::testing {

struct CliResult {
  int status = -1;  // exit status, or -1 if it did not exit normally
  std::string out;
  std::string err;
};

// env: variables to set (an empty value unsets the variable).
CliResult run_sptelab(const std::vector<std::string>& args,
                      const std::map<std::string, std::string>& env = {});

}  // namespace sptelab::tools::testing
