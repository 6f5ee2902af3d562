// libFuzzer target: a request body of `dual-attention serve`'s JSON API, through the completion
// and visualize parsers (fuzz_inputs.h: parse_request_input, which checks the limits were applied
// and that every error is a well-formed JSON error object). Seeds: tests/fixtures/requests/*.json;
// dictionary: completion_request.dict.
#include "fuzz_request_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dual_attention::fuzz::parse_request_input(data, size);
  return 0;
}
