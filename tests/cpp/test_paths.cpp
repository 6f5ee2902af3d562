// The paths of test_paths.h, from this file's compile definitions (tests/CMakeLists.txt).
#include "test_paths.h"

const char* test_fixture_dir() { return DUAL_ATTENTION_TEST_FIXTURE_DIR; }
const char* test_python_executable() { return DUAL_ATTENTION_TEST_PYTHON; }
const char* test_hub_server_script() { return DUAL_ATTENTION_TEST_HUB_SERVER; }
