# Writes OUTPUT (a header defining SPTELAB_REVISION) from `git describe` of
# SOURCE_DIR, and only when the revision changed, so that a build after a
# commit recompiles one file and a build without changes recompiles none.
execute_process(
  COMMAND git -C "${SOURCE_DIR}" describe --always --dirty --abbrev=12
  OUTPUT_VARIABLE revision
  OUTPUT_STRIP_TRAILING_WHITESPACE
  ERROR_QUIET
  RESULT_VARIABLE status)
if(NOT status EQUAL 0 OR revision STREQUAL "")
  # A source tarball has no history: say so rather than invent a revision.
  set(revision "unknown")
endif()
set(content "#define SPTELAB_REVISION \"${revision}\"\n")
set(old "")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT content STREQUAL old)
  file(WRITE "${OUTPUT}" "${content}")
endif()
