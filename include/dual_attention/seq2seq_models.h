// Encoder-decoder sequence-to-sequence models: the standard Transformer and the Dual Attention
// Transformer (reference: dual_attention.seq2seq_models).
//
// Both models map a source sequence x and a target prefix y to next-target logits:
//   x -> source_embedder -> sqrt(d_model) * . + sinusoidal positions -> encoder blocks -> context
//   y -> target_embedder -> sqrt(d_model) * . + sinusoidal positions -> decoder blocks(., context)
//     -> final_out
// Inputs and outputs are described by a spec dict: {"type": "token", "vocab_size": V} (an
// Embedding of V ids) or {"type": "vector", "dim": D} (a Linear from D features).
//
// Compatibility with the reference's checkpoints (both kept on purpose, see docs/models.md):
// - tie_weights: the reference writes `layers.target_embedder.weights = layers.final_out` (note the
//   "s"), which ties nothing: it registers final_out a second time, as a child "weights" of
//   target_embedder. Its state_dict therefore holds layers.target_embedder.weights.{weight,bias}
//   as the very tensors of layers.final_out.{weight,bias}, and save_model stores them once with an
//   alias. We register final_out the same way, so the state_dict keys, the shared tensors and the
//   files are identical; the target embedding and the output layer stay independent, as in the
//   reference.
// - Seq2SeqDualAttnTransformer builds n_layers_enc decoder blocks and ignores n_layers_dec; we do
//   the same, so that its checkpoints load and compute the same. (Seq2SeqTransformer uses
//   n_layers_dec as expected.)
#pragma once

#include <torch/torch.h>

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "dual_attention/detail/model_common.h"
#include "dual_attention/dual_attn_blocks.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/positional_encoding.h"
#include "dual_attention/transformer_blocks.h"

namespace dual_attention {

namespace detail {

// What Seq2SeqTransformer and Seq2SeqDualAttnTransformer share: the source and target embeddings
// with their sinusoidal positions, the output layer, and everything done with a built model.
// `Derived` builds its blocks in reset() (through build_embeddings and register_layers) and runs
// them in its own forward(). Instantiated for the two models only.
template <class Derived, class Options>
class Seq2SeqModelImpl : public torch::nn::Cloneable<Derived> {
 public:
  // `owner` ("Seq2SeqTransformer" or "Seq2SeqDualAttnTransformer") starts the error messages.
  Seq2SeqModelImpl(const Options& options, const char* owner) : options(options), owner_(owner) {}

  // Number of parameters, each shared tensor counted once (final_out once despite its two names).
  int64_t get_num_params() const;

  // Writes config.json and model.safetensors into `folder` (pretrained.h; defined in
  // src/pretrained.cpp).
  void save_pretrained(const std::string& folder) const;

  // A deep copy that keeps final_out's second registration under target_embedder (LibTorch's
  // Cloneable clones each child on its own and cannot rebuild it).
  std::shared_ptr<torch::nn::Module> clone(
      const std::optional<torch::Device>& device = std::nullopt) const override;

  Options options;
  // Everything below is registered inside `layers`, under these names, as in the reference.
  torch::nn::ModuleDict layers{nullptr};
  torch::nn::AnyModule source_embedder, target_embedder;  // Embedding (token) or Linear (vector)
  SinusoidalPositionalEncoding source_pos_embedder{nullptr}, target_pos_embedder{nullptr};
  torch::nn::Linear final_out{nullptr};  // d_model -> out_dim

  // The checked inputs embedded with their positions: (source [b, n, d], target [b, m, d]), the
  // first step of forward() (also used by model_analysis.h).
  std::tuple<torch::Tensor, torch::Tensor> embed(const torch::Tensor& x, const torch::Tensor& y);

 protected:
  // Checks the options both models have and builds the embeddings and their positions.
  void build_embeddings();
  // Builds final_out and registers the embeddings, `middle` (the model's blocks, and what it keeps
  // beside them) and final_out as "layers", in the reference's order; for tie_weights, final_out
  // again under target_embedder (see the file comment).
  void register_layers(const NamedModules& middle);

  const char* owner_;
};

}  // namespace detail

// ---- Seq2SeqTransformer --------------------------------------------------------------------

struct Seq2SeqTransformerOptions {
  Seq2SeqTransformerOptions(Kwargs input_spec, Kwargs output_spec, int64_t d_model, int64_t out_dim,
                            int64_t n_layers_enc, int64_t n_layers_dec, Kwargs encoder_kwargs,
                            Kwargs decoder_kwargs, int64_t in_block_size, int64_t out_block_size)
      : input_spec_(std::move(input_spec)),
        output_spec_(std::move(output_spec)),
        d_model_(d_model),
        out_dim_(out_dim),
        n_layers_enc_(n_layers_enc),
        n_layers_dec_(n_layers_dec),
        encoder_kwargs_(std::move(encoder_kwargs)),
        decoder_kwargs_(std::move(decoder_kwargs)),
        in_block_size_(in_block_size),
        out_block_size_(out_block_size) {}

  // {"type": "token", "vocab_size": V} or {"type": "vector", "dim": D}; other keys are ignored,
  // as in the reference.
  TORCH_ARG(Kwargs, input_spec);
  TORCH_ARG(Kwargs, output_spec);
  TORCH_ARG(int64_t, d_model);
  // Width of the logits (e.g. the target vocabulary size).
  TORCH_ARG(int64_t, out_dim);
  TORCH_ARG(int64_t, n_layers_enc);
  TORCH_ARG(int64_t, n_layers_dec);
  // EncoderBlock / DecoderBlock keywords other than d_model (n_heads, dff, dropout_rate, ...).
  TORCH_ARG(Kwargs, encoder_kwargs);
  TORCH_ARG(Kwargs, decoder_kwargs);
  // Longest source / target sequence (the sizes of the sinusoidal tables).
  TORCH_ARG(int64_t, in_block_size);
  TORCH_ARG(int64_t, out_block_size);
  // Registers final_out a second time as layers.target_embedder.weights (see the file comment).
  TORCH_ARG(bool, tie_weights) = true;
  // Target value left out of the loss.
  TORCH_ARG(int64_t, loss_ignore_idx) = -1;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("input_spec", input_spec_);
    v("output_spec", output_spec_);
    v("d_model", d_model_);
    v("out_dim", out_dim_);
    v("n_layers_enc", n_layers_enc_);
    v("n_layers_dec", n_layers_dec_);
    v("encoder_kwargs", encoder_kwargs_);
    v("decoder_kwargs", decoder_kwargs_);
    v("in_block_size", in_block_size_);
    v("out_block_size", out_block_size_);
    v("tie_weights", tie_weights_);
    v("loss_ignore_idx", loss_ignore_idx_);
  }

  // Seq2SeqTransformer(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types = std::tuple<Kwargs, Kwargs, int64_t, int64_t, int64_t, int64_t, Kwargs,
                                    Kwargs, int64_t, int64_t>;
  static Seq2SeqTransformerOptions from_kwargs(const Kwargs& kwargs,
                                               const std::string& owner = "Seq2SeqTransformer") {
    return options_from_kwargs<Seq2SeqTransformerOptions>(kwargs, owner);
  }
};

class Seq2SeqTransformerImpl
    : public detail::Seq2SeqModelImpl<Seq2SeqTransformerImpl, Seq2SeqTransformerOptions> {
 public:
  explicit Seq2SeqTransformerImpl(const Seq2SeqTransformerOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // x: source ids [b, n] (token) or vectors [b, n, dim] (vector), n <= in_block_size;
  // y: target ids [b, m] or vectors [b, m, dim], m <= out_block_size.
  // With targets (class ids, b * m of them): (logits [b, m, out_dim], the mean cross-entropy over
  // the targets that are not loss_ignore_idx). Without: (logits of the last position only
  // [b, 1, out_dim], undefined loss) -- the reference's (logits, None).
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& y,
                                                   const torch::Tensor& targets = {});

  std::vector<EncoderBlock> encoder_blocks;  // layers.encoder_blocks (a ModuleList)
  std::vector<DecoderBlock> decoder_blocks;  // layers.decoder_blocks (a ModuleList)
};

// Defined, for the two models, in seq2seq_models.cpp.
extern template class detail::Seq2SeqModelImpl<Seq2SeqTransformerImpl, Seq2SeqTransformerOptions>;

class Seq2SeqTransformer
    : public detail::PretrainedModelHolder<Seq2SeqTransformer, Seq2SeqTransformerImpl> {
 public:
  using PretrainedModelHolder::PretrainedModelHolder;
};

// ---- Seq2SeqDualAttnTransformer ------------------------------------------------------------

struct Seq2SeqDualAttnTransformerOptions {
  Seq2SeqDualAttnTransformerOptions(Kwargs input_spec, Kwargs output_spec,
                                    std::string symbol_retrieval, Kwargs symbol_retrieval_kwargs,
                                    int64_t d_model, int64_t out_dim, int64_t n_layers_enc,
                                    int64_t n_layers_dec, Kwargs encoder_kwargs,
                                    Kwargs decoder_kwargs, int64_t in_block_size,
                                    int64_t out_block_size)
      : input_spec_(std::move(input_spec)),
        output_spec_(std::move(output_spec)),
        symbol_retrieval_(std::move(symbol_retrieval)),
        symbol_retrieval_kwargs_(std::move(symbol_retrieval_kwargs)),
        d_model_(d_model),
        out_dim_(out_dim),
        n_layers_enc_(n_layers_enc),
        n_layers_dec_(n_layers_dec),
        encoder_kwargs_(std::move(encoder_kwargs)),
        decoder_kwargs_(std::move(decoder_kwargs)),
        in_block_size_(in_block_size),
        out_block_size_(out_block_size) {}

  // See Seq2SeqTransformerOptions.
  TORCH_ARG(Kwargs, input_spec);
  TORCH_ARG(Kwargs, output_spec);
  // 'symbolic_attention', 'rel_sym_attn', 'positional_symbols' or 'position_relative'; one
  // retriever serves every encoder and decoder block.
  TORCH_ARG(std::string, symbol_retrieval);
  // Keywords of that retriever's constructor.
  TORCH_ARG(Kwargs, symbol_retrieval_kwargs);
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, out_dim);
  TORCH_ARG(int64_t, n_layers_enc);
  // Stored but unused: the reference builds n_layers_enc decoder blocks (see the file comment).
  TORCH_ARG(int64_t, n_layers_dec);
  // DualAttnEncoderBlock / DualAttnDecoderBlock keywords other than d_model.
  TORCH_ARG(Kwargs, encoder_kwargs);
  TORCH_ARG(Kwargs, decoder_kwargs);
  TORCH_ARG(int64_t, in_block_size);
  TORCH_ARG(int64_t, out_block_size);
  TORCH_ARG(bool, tie_weights) = true;
  TORCH_ARG(int64_t, loss_ignore_idx) = -1;

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("input_spec", input_spec_);
    v("output_spec", output_spec_);
    v("symbol_retrieval", symbol_retrieval_);
    v("symbol_retrieval_kwargs", symbol_retrieval_kwargs_);
    v("d_model", d_model_);
    v("out_dim", out_dim_);
    v("n_layers_enc", n_layers_enc_);
    v("n_layers_dec", n_layers_dec_);
    v("encoder_kwargs", encoder_kwargs_);
    v("decoder_kwargs", decoder_kwargs_);
    v("in_block_size", in_block_size_);
    v("out_block_size", out_block_size_);
    v("tie_weights", tie_weights_);
    v("loss_ignore_idx", loss_ignore_idx_);
  }

  // Seq2SeqDualAttnTransformer(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types = std::tuple<Kwargs, Kwargs, std::string, Kwargs, int64_t, int64_t, int64_t,
                                    int64_t, Kwargs, Kwargs, int64_t, int64_t>;
  static Seq2SeqDualAttnTransformerOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "Seq2SeqDualAttnTransformer") {
    return options_from_kwargs<Seq2SeqDualAttnTransformerOptions>(kwargs, owner);
  }
};

class Seq2SeqDualAttnTransformerImpl
    : public detail::Seq2SeqModelImpl<Seq2SeqDualAttnTransformerImpl,
                                      Seq2SeqDualAttnTransformerOptions> {
 public:
  explicit Seq2SeqDualAttnTransformerImpl(const Seq2SeqDualAttnTransformerOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // As Seq2SeqTransformer::forward; each block first retrieves its symbols from its own input
  // (encoder blocks from the source stream, decoder blocks from the target stream).
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& y,
                                                   const torch::Tensor& targets = {});

  // Also registered inside `layers`.
  torch::nn::AnyModule symbol_retriever;  // x [b, n, d] -> symbols (make_symbol_retriever)
  std::vector<DualAttnEncoderBlock> encoder_blocks;  // layers.encoder_blocks (a ModuleList)
  std::vector<DualAttnDecoderBlock> decoder_blocks;  // n_layers_enc of them, as in the reference
};

extern template class detail::Seq2SeqModelImpl<Seq2SeqDualAttnTransformerImpl,
                                               Seq2SeqDualAttnTransformerOptions>;

class Seq2SeqDualAttnTransformer
    : public detail::PretrainedModelHolder<Seq2SeqDualAttnTransformer,
                                           Seq2SeqDualAttnTransformerImpl> {
 public:
  using PretrainedModelHolder::PretrainedModelHolder;
};

}  // namespace dual_attention
