// libFuzzer target: config.json into every model's Options through from_pretrained's path, with a
// 2 MB parameter budget (fuzz_inputs.h). Seeds: every config.json under tests/fixtures
// (scripts/fuzz.sh); dictionary: config.dict.
#include "fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    dual_attention::fuzz::load_config_input(data, size);
  } catch (const c10::Error&) {
  }
  return 0;
}
