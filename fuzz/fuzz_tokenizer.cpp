// libFuzzer target: a tokenizer file of any of the three formats (tiktoken ranks, tokenizer.json,
// vocab.json + merges.txt) and a text, loaded, encoded and decoded (fuzz_inputs.h:
// load_tokenizer_input, whose round-trip invariant aborts on a violation). Seeds:
// fuzz/make_tokenizer_seeds.py (scripts/fuzz.sh); dictionary: tokenizer.dict.
#include "fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dual_attention::fuzz::load_tokenizer_input(data, size);
  return 0;
}
