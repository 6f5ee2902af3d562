// Positional encodings added to token embeddings, and relative-position embeddings
// (reference: dual_attention.positional_encoding).
#pragma once

#include <torch/torch.h>

#include <optional>

#include "dual_attention/kwargs.h"

namespace dual_attention {

// ---- SinusoidalPositionalEncoding ----------------------------------------------------------

struct SinusoidalPositionalEncodingOptions {
  /* implicit */ SinusoidalPositionalEncodingOptions(int64_t d_model) : d_model_(d_model) {}

  // Must be even (the reference cannot build an odd-width table either).
  TORCH_ARG(int64_t, d_model);
  // Multiply the input by sqrt(d_model) before adding the encoding.
  TORCH_ARG(bool, scale) = true;
  TORCH_ARG(double, dropout) = 0.1;
  TORCH_ARG(int64_t, max_len) = 2048;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("scale", scale_);
    v("dropout", dropout_);
    v("max_len", max_len_);
  }

  // SinusoidalPositionalEncoding(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types = std::tuple<int64_t>;
  static SinusoidalPositionalEncodingOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "SinusoidalPositionalEncoding") {
    return options_from_kwargs<SinusoidalPositionalEncodingOptions>(kwargs, owner);
  }
};

class SinusoidalPositionalEncodingImpl
    : public torch::nn::Cloneable<SinusoidalPositionalEncodingImpl> {
 public:
  explicit SinusoidalPositionalEncodingImpl(const SinusoidalPositionalEncodingOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // dropout(scale * x + pe[:n]), x [b, n, d_model] with n <= max_len. pe is a float32 buffer, so a
  // lower-precision x is promoted unless the module was converted with .to(dtype), as in the
  // reference.
  torch::Tensor forward(const torch::Tensor& x);

  SinusoidalPositionalEncodingOptions options;
  // pe[t, 2i] = sin(t / 10000^(2i/d)), pe[t, 2i+1] = cos(t / 10000^(2i/d)); [max_len, d_model],
  // persistent (it is in the reference's state_dict).
  torch::Tensor pe;
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(SinusoidalPositionalEncoding);

// ---- LearnedPositionalEmbeddings -----------------------------------------------------------

struct LearnedPositionalEmbeddingsOptions {
  /* implicit */ LearnedPositionalEmbeddingsOptions(int64_t d_model) : d_model_(d_model) {}

  TORCH_ARG(int64_t, d_model);
  // Multiply the input by sqrt(d_model) before adding the embedding.
  TORCH_ARG(bool, scale) = true;
  TORCH_ARG(double, dropout) = 0.1;
  TORCH_ARG(int64_t, max_len) = 2048;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("d_model", d_model_);
    v("scale", scale_);
    v("dropout", dropout_);
    v("max_len", max_len_);
  }

  // LearnedPositionalEmbeddings(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types = std::tuple<int64_t>;
  static LearnedPositionalEmbeddingsOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "LearnedPositionalEmbeddings") {
    return options_from_kwargs<LearnedPositionalEmbeddingsOptions>(kwargs, owner);
  }
};

class LearnedPositionalEmbeddingsImpl
    : public torch::nn::Cloneable<LearnedPositionalEmbeddingsImpl> {
 public:
  explicit LearnedPositionalEmbeddingsImpl(const LearnedPositionalEmbeddingsOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // dropout(scale * x + position_embeddings(arange(n))), x [b, n, d_model] with n <= max_len.
  torch::Tensor forward(const torch::Tensor& x);

  LearnedPositionalEmbeddingsOptions options;
  torch::nn::Embedding position_embeddings{nullptr};  // [max_len, d_model]
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(LearnedPositionalEmbeddings);

// ---- RelativePositionalEncoding ------------------------------------------------------------

struct RelativePositionalEncodingOptions {
  RelativePositionalEncodingOptions(int64_t dim, int64_t max_rel_pos)
      : dim_(dim), max_rel_pos_(max_rel_pos) {}

  TORCH_ARG(int64_t, dim);
  // Offsets beyond +-max_rel_pos share the embedding of the largest one.
  TORCH_ARG(int64_t, max_rel_pos);

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("dim", dim_);
    v("max_rel_pos", max_rel_pos_);
  }

  // RelativePositionalEncoding(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types = std::tuple<int64_t, int64_t>;
  static RelativePositionalEncodingOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "RelativePositionalEncoding") {
    return options_from_kwargs<RelativePositionalEncodingOptions>(kwargs, owner);
  }
};

class RelativePositionalEncodingImpl : public torch::nn::Cloneable<RelativePositionalEncodingImpl> {
 public:
  RelativePositionalEncodingImpl(int64_t dim, int64_t max_rel_pos)
      : RelativePositionalEncodingImpl(RelativePositionalEncodingOptions(dim, max_rel_pos)) {}
  explicit RelativePositionalEncodingImpl(const RelativePositionalEncodingOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // out[i, j] = rel_pos_embeddings[clamp(j - i, -max_rel_pos, max_rel_pos) + max_rel_pos];
  // [length_q, length_k, dim], on the parameter's device (the reference builds the indices on the
  // CPU and so fails on CUDA). length_k defaults to length_q.
  torch::Tensor forward(int64_t length_q, std::optional<int64_t> length_k = std::nullopt);

  RelativePositionalEncodingOptions options;
  torch::Tensor rel_pos_embeddings;  // [2 * max_rel_pos + 1, dim], xavier-uniform initialised
};
TORCH_MODULE(RelativePositionalEncoding);

}  // namespace dual_attention
