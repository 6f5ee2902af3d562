// Where the C++ suite finds its data: the fixtures, the Python interpreter and the Hub stand-in.
// The paths are compiled into test_paths.cpp alone (tests/CMakeLists.txt), not into every test
// file: a clone at another path then rebuilds one small file instead of missing ccache on every
// test translation unit and the precompiled header.
#pragma once

const char* test_fixture_dir();        // tests/fixtures
const char* test_python_executable();  // the Python CMake found (setup.sh: .venv/bin/python)
const char* test_hub_server_script();  // tests/hub/hub_server.py

#define DUAL_ATTENTION_FIXTURE_DIR (test_fixture_dir())
#define DUAL_ATTENTION_PYTHON (test_python_executable())
#define DUAL_ATTENTION_HUB_SERVER (test_hub_server_script())
