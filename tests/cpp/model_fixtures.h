// The seq2seq and vision models behind one handle, built from a fixture folder of
// tests/fixtures/models/ (config.json + model.safetensors, the layout from_pretrained reads, plus
// meta.json naming the class; see tests/fixtures/make_model_fixtures.py). Shared by
// tests/cpp/test_seq2seq_vision.cpp and tests/helpers/model_roundtrip.cpp.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <variant>

#include "dual_attention/io/state_dict.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/vision_models.h"

namespace model_fixtures {

namespace fs = std::filesystem;
using dual_attention::Kwargs;

using AnyModel =
    std::variant<dual_attention::Seq2SeqTransformer, dual_attention::Seq2SeqDualAttnTransformer,
                 dual_attention::VisionTransformer, dual_attention::VisionDualAttnTransformer>;

inline Kwargs read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return Kwargs::parse(in);
}

// A freshly initialised model of class `cls` from its constructor keywords.
inline AnyModel build_model(const std::string& cls, const Kwargs& config) {
  using namespace dual_attention;
  if (cls == "Seq2SeqTransformer") {
    return Seq2SeqTransformer(Seq2SeqTransformerOptions::from_kwargs(config));
  }
  if (cls == "Seq2SeqDualAttnTransformer") {
    return Seq2SeqDualAttnTransformer(Seq2SeqDualAttnTransformerOptions::from_kwargs(config));
  }
  if (cls == "VisionTransformer") {
    return VisionTransformer(VisionTransformerOptions::from_kwargs(config));
  }
  if (cls == "VisionDualAttnTransformer") {
    return VisionDualAttnTransformer(VisionDualAttnTransformerOptions::from_kwargs(config));
  }
  throw std::runtime_error("unknown model class " + cls);
}

inline torch::nn::Module& module_of(AnyModel& model) {
  return std::visit([](auto& m) -> torch::nn::Module& { return *m; }, model);
}

inline bool is_seq2seq(const AnyModel& model) { return model.index() < 2; }

inline int64_t num_params(AnyModel& model) {
  return std::visit([](auto& m) { return m->get_num_params(); }, model);
}

inline Kwargs options_as_kwargs(const AnyModel& model) {
  return std::visit([](const auto& m) { return dual_attention::to_kwargs(m->options); }, model);
}

// Seq2seq: forward(x, y, targets) when with_targets, else forward(x, y). Vision: (forward(x), {}).
// `x_name` picks the image ("x" or "x_small").
inline std::tuple<torch::Tensor, torch::Tensor> run_forward(
    AnyModel& model, const std::map<std::string, torch::Tensor>& inputs, bool with_targets,
    const std::string& x_name = "x") {
  const auto& x = inputs.at(x_name);
  if (auto* m = std::get_if<dual_attention::Seq2SeqTransformer>(&model)) {
    return (*m)->forward(x, inputs.at("y"), with_targets ? inputs.at("targets") : torch::Tensor());
  }
  if (auto* m = std::get_if<dual_attention::Seq2SeqDualAttnTransformer>(&model)) {
    return (*m)->forward(x, inputs.at("y"), with_targets ? inputs.at("targets") : torch::Tensor());
  }
  if (auto* m = std::get_if<dual_attention::VisionTransformer>(&model)) {
    return {(*m)->forward(x), torch::Tensor()};
  }
  return {std::get<dual_attention::VisionDualAttnTransformer>(model)->forward(x), torch::Tensor()};
}

inline torch::ScalarType dtype_of(const Kwargs& meta) {
  return meta.at("dtype") == "float64" ? torch::kFloat64 : torch::kFloat32;
}

// XxxModel::from_pretrained(dir) for the fixture's class (meta.json names it).
inline AnyModel from_pretrained(const fs::path& dir,
                                const dual_attention::PretrainedOptions& options = {}) {
  using namespace dual_attention;
  const std::string cls = read_json(dir / "meta.json").at("model");
  if (cls == "Seq2SeqTransformer") return Seq2SeqTransformer::from_pretrained(dir, options);
  if (cls == "Seq2SeqDualAttnTransformer") {
    return Seq2SeqDualAttnTransformer::from_pretrained(dir, options);
  }
  if (cls == "VisionTransformer") return VisionTransformer::from_pretrained(dir, options);
  if (cls == "VisionDualAttnTransformer") {
    return VisionDualAttnTransformer::from_pretrained(dir, options);
  }
  throw std::runtime_error("unknown model class " + cls);
}

inline void save_pretrained(AnyModel& model, const fs::path& dir) {
  std::visit([&](auto& m) { m->save_pretrained(dir.string()); }, model);
}

}  // namespace model_fixtures
