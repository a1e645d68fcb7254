// Where the tests find guest images, and the out-of-tree guest built at test
// time with the command line guest/README.md documents.
#pragma once

#include <string>
#include <vector>

namespace sptelab::hypervisor::testing {

// A built-in guest (guest/) by name: <build>/guests/NAME.elf.
std::string builtin_guest(const std::string& name);
// A test-only guest (tests/hypervisor/guests/): <build>/tests/hypervisor/guests/NAME.elf.
std::string test_guest(const std::string& name);
// The sptelab binary.
std::string sptelab_binary();

// The README's guest build command for `source`, writing `output`.
std::vector<std::string> readme_build_command(const std::string& source, const std::string& output);
// Builds tests/hypervisor/guests/external.c that way (once per process) and
// returns the image's path; fails the calling test (via an exception) if the
// documented command does not work.
const std::string& external_guest();

std::vector<uint8_t> read_file(const std::string& path);
// A fresh directory under the test temp dir.
std::string make_temp_dir();

}  // namespace sptelab::hypervisor::testing
