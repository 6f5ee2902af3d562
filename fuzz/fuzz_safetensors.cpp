// libFuzzer target: a safetensors file's bytes (length prefix, JSON header, data section), opened
// and read whole (fuzz_inputs.h). Seeds: tests/fixtures/**/*.safetensors under 32 KB
// (scripts/fuzz.sh); dictionary: safetensors.dict.
#include "fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    dual_attention::fuzz::load_safetensors_input(data, size);
  } catch (const c10::Error&) {
  }
  return 0;
}
