// What each fuzz target does with one input, shared by the libFuzzer targets (fuzz_*.cpp) and the
// regression test that replays every committed finding (tests/cpp/test_loading.cpp,
// tests/fixtures/fuzz/<target>/). Each function must return normally or raise c10::Error, for
// any input; anything else (a crash, a sanitizer report, another exception) is a finding.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dual_attention/io/safetensors.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/tokenizer.h"
#include "dual_attention/vision_models.h"
#include "fuzz_request_input.h"

namespace dual_attention::fuzz {

// A safetensors file's bytes: opened from memory, every tensor and alias read as a copy and as a
// view, and every byte of each read here (instrumented code, so that ASan catches a view past the
// buffer; a torch reduction would run uninstrumented, and slowly).
inline void load_safetensors_input(const uint8_t* data, size_t size) {
  auto file =
      io::SafetensorsFile::from_bytes(std::string(reinterpret_cast<const char*>(data), size));
  volatile uint8_t sink = 0;
  for (bool zero_copy : {false, true}) {
    for (const auto& item : file.tensors(io::LoadOptions().zero_copy(zero_copy))) {
      const torch::Tensor& t = item.second;  // contiguous: a copy or a view of the bytes
      const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
      const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
      uint8_t x = 0;
      for (size_t i = 0; i < nbytes; ++i) x ^= bytes[i];
      sink = sink ^ x;
    }
  }
  for (const auto& alias : file.aliases()) (void)file.get(alias.first);
}

// The budget of load_config_input: whatever passes it is cheap to build, and anything above must
// be refused by the estimate, before allocation.
constexpr int64_t kConfigBudgetBytes = 2 << 20;

template <class Holder>
void build_if_valid(const Kwargs& config) {
  try {
    (void)model_from_config<Holder>(
        config, PretrainedOptions().max_parameter_bytes(kConfigBudgetBytes), "config.json");
  } catch (const c10::Error&) {
  }
}

// config.json's bytes, through from_pretrained's own path (parse_config_json, then
// model_from_config: from_kwargs, the estimate and budget check, the constructor) into all six
// models' Options.
inline void load_config_input(const uint8_t* data, size_t size) {
  const Kwargs config =
      parse_config_json(std::string(reinterpret_cast<const char*>(data), size), "config.json");
  build_if_valid<DualAttnTransformerLM>(config);
  build_if_valid<TransformerLM>(config);
  build_if_valid<Seq2SeqTransformer>(config);
  build_if_valid<Seq2SeqDualAttnTransformer>(config);
  build_if_valid<VisionTransformer>(config);
  build_if_valid<VisionDualAttnTransformer>(config);
}

// The parts of an input separated by kPartSeparator (fuzz_tokenizer's layout).
inline constexpr std::string_view kPartSeparator = "\n--8<--\n";

inline std::vector<std::string_view> split_parts(std::string_view input) {
  std::vector<std::string_view> parts;
  for (;;) {
    const size_t at = input.find(kPartSeparator);
    parts.push_back(input.substr(0, at));
    if (at == std::string_view::npos) return parts;
    input.remove_prefix(at + kPartSeparator.size());
  }
}

// A tokenizer file and a text, loaded and used the way a program would. The input is a format
// byte (its value mod 3: 0 a tiktoken rank file, 1 tokenizer.json, 2 vocab.json + merges.txt), then
// the file(s) and the text, separated by kPartSeparator. Seeds: fuzz/make_tokenizer_seeds.py.
// Whatever loads must round-trip: decode_bytes(encode_ordinary(text)) == text (byte-level BPE
// encodes every byte sequence exactly) once invalid UTF-8 is replaced by U+FFFD (as encode
// documents), and every id it reports is decodable.
inline void load_tokenizer_input(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const auto parts =
      split_parts(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  auto part = [&](size_t i) { return i < parts.size() ? parts[i] : std::string_view(); };
  const int format = data[0] % 3;
  std::optional<Tokenizer> loaded;
  try {
    if (format == 0) loaded = Tokenizer::from_tiktoken_bpe(part(0), {}, "fuzz.tiktoken");
    if (format == 1) loaded = Tokenizer::from_tokenizer_json(part(0), "tokenizer.json");
    if (format == 2) loaded = Tokenizer::from_vocab_merges(part(0), part(1));
  } catch (const TokenizerError&) {
    return;  // refused with a clear error: fine
  }
  const Tokenizer& tokenizer = *loaded;
  const std::string_view raw = part(format == 2 ? 2 : 1);
  const std::string text = utf8_replace_invalid(raw);  // what encode reads
  std::vector<int64_t> ids;
  try {
    ids = tokenizer.encode_ordinary(raw);
  } catch (const TokenizerError&) {
    return;  // e.g. a byte the vocabulary cannot spell
  }
  for (int64_t id : ids) {
    if (!tokenizer.contains(id))
      invariant_failed("encode_ordinary returned an id not in the vocabulary");
  }
  if (tokenizer.decode_bytes(ids) != text)
    invariant_failed("decode_bytes(encode_ordinary(text)) != text");
  (void)tokenizer.decode(ids);
  try {  // special tokens allowed: each one found becomes its id
    const auto with_special = tokenizer.encode(raw, SpecialTokenSet::all());
    if (tokenizer.decode_bytes(with_special) != text)
      invariant_failed("decode_bytes(encode(text, allowed_special='all')) != text");
  } catch (const TokenizerError&) {
  }
  for (const auto& item : tokenizer.special_tokens()) {
    // tiktoken looks a name up among the ordinary tokens first, so the id may differ; it must
    // exist.
    if (!tokenizer.contains(tokenizer.encode_single_token(item.first)))
      invariant_failed("encode_single_token returned an id not in the vocabulary");
  }
  const int64_t n_vocab = tokenizer.n_vocab();
  for (int64_t id = 0; id < std::min<int64_t>(n_vocab, 512); ++id) {
    if (tokenizer.contains(id)) (void)tokenizer.decode_single_token_bytes(id);
  }
}

}  // namespace dual_attention::fuzz
