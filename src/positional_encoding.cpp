#include "dual_attention/positional_encoding.h"

#include <cmath>

#include "dual_attention/attention_utils.h"

namespace dual_attention {
namespace {

void check_common_options(int64_t d_model, double dropout, int64_t max_len, const char* owner) {
  TORCH_CHECK(d_model > 0, owner, ": d_model must be positive, got ", d_model);
  TORCH_CHECK(dropout >= 0.0 && dropout <= 1.0, owner, ": dropout must be in [0, 1], got ",
              dropout);
  TORCH_CHECK(max_len > 0, owner, ": max_len must be positive, got ", max_len);
}

void check_length(const torch::Tensor& x, int64_t d_model, int64_t max_len, const char* owner) {
  detail::check_sequence_input(x, d_model, owner, "x");
  TORCH_CHECK(x.size(1) <= max_len, owner, ": sequence length ", x.size(1), " exceeds max_len ",
              max_len);
}

}  // namespace

// ---- SinusoidalPositionalEncoding ----------------------------------------------------------

SinusoidalPositionalEncodingImpl::SinusoidalPositionalEncodingImpl(
    const SinusoidalPositionalEncodingOptions& options_)
    : options(options_) {
  reset();
}

void SinusoidalPositionalEncodingImpl::reset() {
  const auto& o = options;
  const char* owner = "SinusoidalPositionalEncoding";
  check_common_options(o.d_model(), o.dropout(), o.max_len(), owner);
  TORCH_CHECK(o.d_model() % 2 == 0, owner,
              ": d_model must be even (sin and cos columns alternate), got ", o.d_model());

  dropout = register_module("dropout", torch::nn::Dropout(o.dropout()));
  // Same operations and dtypes as the reference (int64 positions times a float32 frequency row), so
  // the table matches it bit for bit.
  auto position = torch::arange(o.max_len(), torch::kLong).unsqueeze(1);  // [max_len, 1]
  auto div_term = torch::exp(torch::arange(0, o.d_model(), 2, torch::kLong) *
                             (-std::log(10000.0) / static_cast<double>(o.d_model())));
  auto angles = position * div_term;  // [max_len, d_model / 2]
  auto table = torch::zeros({o.max_len(), o.d_model()});
  using torch::indexing::None;
  using torch::indexing::Slice;
  table.index_put_({Slice(), Slice(0, None, 2)}, torch::sin(angles));
  table.index_put_({Slice(), Slice(1, None, 2)}, torch::cos(angles));
  pe = register_buffer("pe", table);
}

void SinusoidalPositionalEncodingImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::SinusoidalPositionalEncoding(d_model=" << options.d_model()
         << ", scale=" << std::boolalpha << options.scale() << ", dropout=" << options.dropout()
         << ", max_len=" << options.max_len() << ")";
}

torch::Tensor SinusoidalPositionalEncodingImpl::forward(const torch::Tensor& x) {
  check_length(x, options.d_model(), options.max_len(), "SinusoidalPositionalEncoding");
  const double scale = options.scale() ? std::sqrt(static_cast<double>(options.d_model())) : 1.0;
  return dropout(x * scale + pe.slice(0, 0, x.size(1)));
}

// ---- LearnedPositionalEmbeddings -----------------------------------------------------------

LearnedPositionalEmbeddingsImpl::LearnedPositionalEmbeddingsImpl(
    const LearnedPositionalEmbeddingsOptions& options_)
    : options(options_) {
  reset();
}

void LearnedPositionalEmbeddingsImpl::reset() {
  const auto& o = options;
  check_common_options(o.d_model(), o.dropout(), o.max_len(), "LearnedPositionalEmbeddings");
  position_embeddings =
      register_module("position_embeddings", torch::nn::Embedding(o.max_len(), o.d_model()));
  dropout = register_module("dropout", torch::nn::Dropout(o.dropout()));
}

void LearnedPositionalEmbeddingsImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::LearnedPositionalEmbeddings(d_model=" << options.d_model()
         << ", scale=" << std::boolalpha << options.scale() << ", dropout=" << options.dropout()
         << ", max_len=" << options.max_len() << ")";
}

torch::Tensor LearnedPositionalEmbeddingsImpl::forward(const torch::Tensor& x) {
  check_length(x, options.d_model(), options.max_len(), "LearnedPositionalEmbeddings");
  const double scale = options.scale() ? std::sqrt(static_cast<double>(options.d_model())) : 1.0;
  auto positions = torch::arange(x.size(1), torch::dtype(torch::kLong).device(x.device()));
  return dropout(x * scale + position_embeddings(positions));
}

// ---- RelativePositionalEncoding ------------------------------------------------------------

RelativePositionalEncodingImpl::RelativePositionalEncodingImpl(
    const RelativePositionalEncodingOptions& options_)
    : options(options_) {
  reset();
}

void RelativePositionalEncodingImpl::reset() {
  const char* owner = "RelativePositionalEncoding";
  TORCH_CHECK(options.dim() > 0, owner, ": dim must be positive, got ", options.dim());
  TORCH_CHECK(options.max_rel_pos() >= 0, owner, ": max_rel_pos must be >= 0, got ",
              options.max_rel_pos());
  rel_pos_embeddings = register_parameter(
      "rel_pos_embeddings", torch::empty({2 * options.max_rel_pos() + 1, options.dim()}));
  torch::nn::init::xavier_uniform_(rel_pos_embeddings);
}

void RelativePositionalEncodingImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::RelativePositionalEncoding(dim=" << options.dim()
         << ", max_rel_pos=" << options.max_rel_pos() << ")";
}

torch::Tensor RelativePositionalEncodingImpl::forward(int64_t length_q,
                                                      std::optional<int64_t> length_k) {
  const char* owner = "RelativePositionalEncoding";
  const int64_t lk = length_k.value_or(length_q);
  TORCH_CHECK(length_q >= 0, owner, ": length_q must be >= 0, got ", length_q);
  TORCH_CHECK(lk >= 0, owner, ": length_k must be >= 0, got ", lk);
  const int64_t m = options.max_rel_pos();
  auto idx = torch::dtype(torch::kLong).device(rel_pos_embeddings.device());
  auto offsets = torch::arange(lk, idx).unsqueeze(0) - torch::arange(length_q, idx).unsqueeze(1);
  auto rows = offsets.clamp(-m, m) + m;     // [lq, lk], in [0, 2m]
  return rel_pos_embeddings.index({rows});  // [lq, lk, dim]
}

}  // namespace dual_attention
