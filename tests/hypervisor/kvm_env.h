// Detects a usable /dev/kvm (or $SPTELAB_KVM_DEVICE) once per test process.
// KVM tests start with SPTELAB_REQUIRE_KVM(), which skips them with the
// reason on machines without KVM.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace sptelab::hypervisor::testing {

// Empty when KVM is usable, otherwise why not.
const std::string& kvm_unavailable_reason();

}  // namespace sptelab::hypervisor::testing

#define SPTELAB_REQUIRE_KVM()                                                                 \
  do {                                                                                        \
    const std::string& sptelab_kvm_reason =                                                   \
        ::sptelab::hypervisor::testing::kvm_unavailable_reason();                             \
    if (!sptelab_kvm_reason.empty()) GTEST_SKIP() << "no usable KVM: " << sptelab_kvm_reason; \
  } while (0)
