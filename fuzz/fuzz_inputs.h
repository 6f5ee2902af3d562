// What each fuzz target does with one input, shared by the libFuzzer targets (fuzz_*.cpp) and the
// regression test that replays every committed finding (tests/cpp/test_loading.cpp,
// tests/fixtures/fuzz/<target>/). Each function must return normally or raise c10::Error, for
// any input; anything else (a crash, a sanitizer report, another exception) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "dual_attention/io/safetensors.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/vision_models.h"

namespace dual_attention::fuzz {

// A safetensors file's bytes: opened from memory, every tensor and alias read as a copy and as a
// view, every byte touched (so that a view past the buffer is caught).
inline void load_safetensors_input(const uint8_t* data, size_t size) {
  auto file =
      io::SafetensorsFile::from_bytes(std::string(reinterpret_cast<const char*>(data), size));
  for (bool zero_copy : {false, true}) {
    for (const auto& item : file.tensors(io::LoadOptions().zero_copy(zero_copy))) {
      const torch::Tensor& t = item.second;
      if (t.numel() > 0) (void)t.contiguous().view(torch::kUInt8).sum().item<int64_t>();
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

}  // namespace dual_attention::fuzz
