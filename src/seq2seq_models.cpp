#include "dual_attention/seq2seq_models.h"

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dual_attention/symbol_retrieval.h"

namespace dual_attention {
namespace {

// An input_spec / output_spec dict, validated.
struct Spec {
  bool token = true;
  int64_t size = 0;  // vocab_size (token) or dim (vector)
};

Spec parse_spec(const Kwargs& spec, const char* argument, const char* owner) {
  TORCH_CHECK(spec.is_object() && spec.contains("type"), owner, ": ", argument,
              " must be a dict with a 'type' ('token' or 'vector'), got ", spec.dump());
  const Kwargs& type = spec["type"];
  TORCH_CHECK(type == "token" || type == "vector", owner, ": ", argument,
              "['type'] must be 'token' or 'vector', not ", type.dump());
  Spec out;
  out.token = type == "token";
  const char* key = out.token ? "vocab_size" : "dim";
  TORCH_CHECK(spec.contains(key) && spec[key].is_number_integer() && spec[key].get<int64_t>() > 0,
              owner, ": ", argument, " of type ", type.dump(), " needs a positive int '", key,
              "', got ", spec.dump());
  out.size = spec[key].get<int64_t>();
  return out;
}

// Embedding(vocab_size, d_model) for token sequences, Linear(dim, d_model) for vector sequences.
torch::nn::AnyModule make_embedder(const Spec& spec, int64_t d_model) {
  if (spec.token) return torch::nn::AnyModule(torch::nn::Embedding(spec.size, d_model));
  return torch::nn::AnyModule(torch::nn::Linear(spec.size, d_model));
}

SinusoidalPositionalEncoding make_positions(int64_t d_model, int64_t block_size) {
  return SinusoidalPositionalEncoding(
      SinusoidalPositionalEncodingOptions(d_model).dropout(0.0).max_len(block_size));
}

// The block keywords with d_model added, as the reference calls Block(d_model, **block_kwargs).
Kwargs block_kwargs(const Kwargs& kwargs, int64_t d_model, const char* owner,
                    const char* argument) {
  TORCH_CHECK(kwargs.is_null() || kwargs.is_object(), owner, ": ", argument,
              " must be a dict, got ", kwargs.dump());
  check_no_reserved_kwargs(kwargs, {"d_model"}, owner, argument);
  Kwargs out = kwargs.is_null() ? Kwargs::object() : kwargs;
  out["d_model"] = d_model;
  return out;
}

// n blocks built from the same keywords, held both in `blocks` (typed, for forward) and in the
// returned ModuleList (registered under the reference's name, for the state_dict).
template <class Block>
torch::nn::ModuleList make_blocks(std::vector<Block>& blocks, int64_t n, const Kwargs& kwargs,
                                  const std::string& owner) {
  using Options = std::decay_t<decltype(std::declval<Block>()->options)>;
  torch::nn::ModuleList list;
  blocks.clear();
  for (int64_t i = 0; i < n; ++i) {
    blocks.emplace_back(Options::from_kwargs(kwargs, owner));
    list->push_back(blocks.back());
  }
  return list;
}

// x or y of a forward call: ids [b, n] in [0, vocab_size) or vectors [b, n, dim], n <= block_size.
void check_sequence(const torch::Tensor& t, const Spec& spec, int64_t block_size,
                    const char* argument, const char* block_argument, const char* owner) {
  TORCH_CHECK(t.defined(), owner, ": ", argument, " is required");
  if (spec.token) {
    TORCH_CHECK(t.dim() == 2, owner, ": ", argument,
                " must be token ids [batch, len], got a tensor of shape ", t.sizes());
    TORCH_CHECK(c10::isIntegralType(t.scalar_type(), /*includeBool=*/false), owner, ": ", argument,
                " must hold integer token ids, got dtype ", t.scalar_type());
    if (t.numel() > 0) {
      const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < spec.size, owner, ": ", argument, " holds token ids in [", lo,
                  ", ", hi, "], expected ids in [0, ", spec.size - 1, "] (vocab_size ", spec.size,
                  ")");
    }
  } else {
    TORCH_CHECK(t.dim() == 3 && t.size(2) == spec.size, owner, ": ", argument,
                " must be vectors [batch, len, ", spec.size, "], got a tensor of shape ",
                t.sizes());
    TORCH_CHECK(t.is_floating_point(), owner, ": ", argument,
                " must be a floating-point tensor, got dtype ", t.scalar_type());
  }
  TORCH_CHECK(t.size(1) >= 1, owner, ": ", argument, " must not be empty, got a tensor of shape ",
              t.sizes());
  TORCH_CHECK(t.size(1) <= block_size, owner, ": ", argument, " has length ", t.size(1),
              ", longer than ", block_argument, " (", block_size, ")");
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& y, const Kwargs& input_spec,
                  const Kwargs& output_spec, int64_t in_block_size, int64_t out_block_size,
                  const char* owner) {
  check_sequence(x, parse_spec(input_spec, "input_spec", owner), in_block_size, "x",
                 "in_block_size", owner);
  check_sequence(y, parse_spec(output_spec, "output_spec", owner), out_block_size, "y",
                 "out_block_size", owner);
  TORCH_CHECK(x.size(0) == y.size(0), owner, ": x and y must have the same batch size, got ",
              x.size(0), " and ", y.size(0));
}

// The reference's head: with targets, logits at every position and
// cross_entropy(logits.view(-1, out_dim), targets.view(-1), ignore_index); without, the logits of
// the last position only and no loss.
std::tuple<torch::Tensor, torch::Tensor> logits_and_loss(torch::nn::Linear& final_out,
                                                         const torch::Tensor& y,
                                                         const torch::Tensor& targets,
                                                         int64_t ignore_index, const char* owner) {
  if (!targets.defined()) {
    return {final_out(y.slice(/*dim=*/1, y.size(1) - 1)), torch::Tensor()};  // [b, 1, out_dim]
  }
  const int64_t out_dim = final_out->options.out_features();
  TORCH_CHECK(c10::isIntegralType(targets.scalar_type(), /*includeBool=*/false), owner,
              ": targets must hold integer class ids, got dtype ", targets.scalar_type());
  TORCH_CHECK(targets.numel() == y.size(0) * y.size(1), owner,
              ": targets must hold one class id per target position (batch ", y.size(0),
              " x length ", y.size(1), "), got shape ", targets.sizes());
  const auto flat_targets = targets.reshape({-1}).to(torch::kLong);
  const auto counted = flat_targets.ne(ignore_index);
  if (counted.any().item<bool>()) {
    const auto kept = flat_targets.masked_select(counted);
    const int64_t lo = kept.min().item<int64_t>(), hi = kept.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < out_dim, owner, ": targets hold class ids in [", lo, ", ", hi,
                "], expected ids in [0, ", out_dim - 1, "] or loss_ignore_idx (", ignore_index,
                ")");
  }
  auto logits = final_out(y);  // [b, m, out_dim]
  auto loss = torch::nn::functional::cross_entropy(
      logits.reshape({-1, out_dim}), flat_targets,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(ignore_index));
  return {logits, loss};
}

}  // namespace

// ---- What both models share ----------------------------------------------------------------

namespace detail {

template <class Derived, class Options>
void Seq2SeqModelImpl<Derived, Options>::build_embeddings() {
  const auto& o = options;
  TORCH_CHECK(o.d_model() > 0, owner_, ": d_model must be positive, got ", o.d_model());
  TORCH_CHECK(o.out_dim() > 0, owner_, ": out_dim must be positive, got ", o.out_dim());
  TORCH_CHECK(o.n_layers_enc() >= 0, owner_, ": n_layers_enc must be >= 0, got ", o.n_layers_enc());
  TORCH_CHECK(o.n_layers_dec() >= 0, owner_, ": n_layers_dec must be >= 0, got ", o.n_layers_dec());
  TORCH_CHECK(o.in_block_size() > 0, owner_, ": in_block_size must be positive, got ",
              o.in_block_size());
  TORCH_CHECK(o.out_block_size() > 0, owner_, ": out_block_size must be positive, got ",
              o.out_block_size());
  source_embedder = make_embedder(parse_spec(o.input_spec(), "input_spec", owner_), o.d_model());
  target_embedder = make_embedder(parse_spec(o.output_spec(), "output_spec", owner_), o.d_model());
  source_pos_embedder = make_positions(o.d_model(), o.in_block_size());
  target_pos_embedder = make_positions(o.d_model(), o.out_block_size());
}

template <class Derived, class Options>
void Seq2SeqModelImpl<Derived, Options>::register_layers(const NamedModules& middle) {
  final_out = torch::nn::Linear(options.d_model(), options.out_dim());
  NamedModules named = {{"source_embedder", source_embedder.ptr()},
                        {"target_embedder", target_embedder.ptr()},
                        {"source_pos_embedder", source_pos_embedder.ptr()},
                        {"target_pos_embedder", target_pos_embedder.ptr()}};
  named.insert(named.end(), middle.begin(), middle.end());
  named.emplace_back("final_out", final_out.ptr());
  layers = this->register_module("layers", torch::nn::ModuleDict(named));
  // The reference's `target_embedder.weights = final_out` (see the header comment).
  if (options.tie_weights()) target_embedder.ptr()->register_module("weights", final_out.ptr());
}

template <class Derived, class Options>
std::tuple<torch::Tensor, torch::Tensor> Seq2SeqModelImpl<Derived, Options>::embed(
    const torch::Tensor& x, const torch::Tensor& y) {
  check_inputs(x, y, options.input_spec(), options.output_spec(), options.in_block_size(),
               options.out_block_size(), owner_);
  auto source = source_pos_embedder(source_embedder.forward(x));  // [b, n, d]
  auto target = target_pos_embedder(target_embedder.forward(y));  // [b, m, d]
  return {source, target};
}

template <class Derived, class Options>
int64_t Seq2SeqModelImpl<Derived, Options>::get_num_params() const {
  return count_unique_parameters(*this);
}

template <class Derived, class Options>
std::shared_ptr<torch::nn::Module> Seq2SeqModelImpl<Derived, Options>::clone(
    const std::optional<torch::Device>& device) const {
  return clone_model(static_cast<const Derived&>(*this), device);
}

template class Seq2SeqModelImpl<Seq2SeqTransformerImpl, Seq2SeqTransformerOptions>;
template class Seq2SeqModelImpl<Seq2SeqDualAttnTransformerImpl, Seq2SeqDualAttnTransformerOptions>;

}  // namespace detail

// ---- Seq2SeqTransformer --------------------------------------------------------------------

Seq2SeqTransformerImpl::Seq2SeqTransformerImpl(const Seq2SeqTransformerOptions& options_)
    : Seq2SeqModelImpl(options_, "Seq2SeqTransformer") {
  reset();
}

void Seq2SeqTransformerImpl::reset() {
  const auto& o = options;
  build_embeddings();

  const Kwargs enc_kwargs = block_kwargs(o.encoder_kwargs(), o.d_model(), owner_, "encoder_kwargs");
  const Kwargs dec_kwargs = block_kwargs(o.decoder_kwargs(), o.d_model(), owner_, "decoder_kwargs");
  auto encoder_list = make_blocks(encoder_blocks, o.n_layers_enc(), enc_kwargs,
                                  "Seq2SeqTransformer: encoder_kwargs (EncoderBlock)");
  auto decoder_list = make_blocks(decoder_blocks, o.n_layers_dec(), dec_kwargs,
                                  "Seq2SeqTransformer: decoder_kwargs (DecoderBlock)");
  register_layers({{"encoder_blocks", encoder_list.ptr()}, {"decoder_blocks", decoder_list.ptr()}});
}

void Seq2SeqTransformerImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::Seq2SeqTransformer(input_spec=" << options.input_spec().dump()
         << ", output_spec=" << options.output_spec().dump() << ", d_model=" << options.d_model()
         << ", out_dim=" << options.out_dim() << ", n_layers_enc=" << options.n_layers_enc()
         << ", n_layers_dec=" << options.n_layers_dec() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> Seq2SeqTransformerImpl::forward(
    const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& targets) {
  auto [source, target] = embed(x, y);                                // [b, n, d], [b, m, d]
  for (auto& block : encoder_blocks) source = block(source);          // [b, n, d]
  for (auto& block : decoder_blocks) target = block(target, source);  // [b, m, d]
  return logits_and_loss(final_out, target, targets, options.loss_ignore_idx(), owner_);
}

// ---- Seq2SeqDualAttnTransformer ------------------------------------------------------------

Seq2SeqDualAttnTransformerImpl::Seq2SeqDualAttnTransformerImpl(
    const Seq2SeqDualAttnTransformerOptions& options_)
    : Seq2SeqModelImpl(options_, "Seq2SeqDualAttnTransformer") {
  reset();
}

void Seq2SeqDualAttnTransformerImpl::reset() {
  const auto& o = options;
  build_embeddings();
  symbol_retriever = make_symbol_retriever(o.symbol_retrieval(), o.symbol_retrieval_kwargs(),
                                           /*allow_rel_sym_attn=*/true);

  const Kwargs enc_kwargs = block_kwargs(o.encoder_kwargs(), o.d_model(), owner_, "encoder_kwargs");
  const Kwargs dec_kwargs = block_kwargs(o.decoder_kwargs(), o.d_model(), owner_, "decoder_kwargs");
  auto encoder_list =
      make_blocks(encoder_blocks, o.n_layers_enc(), enc_kwargs,
                  "Seq2SeqDualAttnTransformer: encoder_kwargs (DualAttnEncoderBlock)");
  // n_layers_enc decoder blocks: the reference's quirk, kept for checkpoint compatibility.
  auto decoder_list =
      make_blocks(decoder_blocks, o.n_layers_enc(), dec_kwargs,
                  "Seq2SeqDualAttnTransformer: decoder_kwargs (DualAttnDecoderBlock)");
  register_layers({{"symbol_retriever", symbol_retriever.ptr()},
                   {"encoder_blocks", encoder_list.ptr()},
                   {"decoder_blocks", decoder_list.ptr()}});
}

void Seq2SeqDualAttnTransformerImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::Seq2SeqDualAttnTransformer(input_spec=" << options.input_spec().dump()
         << ", output_spec=" << options.output_spec().dump()
         << ", symbol_retrieval=" << options.symbol_retrieval() << ", d_model=" << options.d_model()
         << ", out_dim=" << options.out_dim() << ", n_layers_enc=" << options.n_layers_enc() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> Seq2SeqDualAttnTransformerImpl::forward(
    const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& targets) {
  auto [source, target] = embed(x, y);  // [b, n, d], [b, m, d]
  for (auto& block : encoder_blocks) {
    source = block(source, symbol_retriever.forward(source));  // [b, n, d]
  }
  for (auto& block : decoder_blocks) {
    target = block(target, source, symbol_retriever.forward(target));  // [b, m, d]
  }
  return logits_and_loss(final_out, target, targets, options.loss_ignore_idx(), owner_);
}

}  // namespace dual_attention
