// Image classifiers: the Vision Transformer (ViT) and the Vision Dual Attention Transformer
// (reference: dual_attention.vision_models).
//
// An image x [b, c, H, W] is cut into patches of patch_height x patch_width pixels, each flattened
// in (row, column, channel) order -- einops 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)' with
// p1 = patch_height, p2 = patch_width -- and embedded by LayerNorm -> Linear -> LayerNorm
// (to_patch_embedding.1 / .2 / .3). A learned class token is prepended, learned positions are
// added, the sequence runs through non-causal encoder blocks, and the class token's output
// (pool 'cls') or the mean over all positions (pool 'mean') goes through final_out.
//
// Shapes follow the reference's naming: image_shape = (channels, width, height) and
// patch_size = (patch_width, patch_height), so an image of exactly image_shape is
// [b, channels, height, width]. Like the reference, forward accepts any image whose height is a
// multiple of patch_height and width a multiple of patch_width with at most num_patches patches
// (a smaller image uses the first positions of pos_embedding); other images are errors.
//
// Deviation (documented in docs/models.md): an image_shape not divisible by patch_size is an
// error at construction; the reference rounds num_patches down and then cannot take an image of
// its own image_shape.
#pragma once

#include <torch/torch.h>

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dual_attention/detail/model_common.h"
#include "dual_attention/dual_attn_blocks.h"
#include "dual_attention/kwargs.h"
#include "dual_attention/transformer_blocks.h"

namespace dual_attention {

// The one table of pooling names: 'cls', 'mean'.
const std::vector<std::string>& vision_pool_names();

namespace detail {

// The encoder's output tokens h [b, n + 1, d_model] pooled for the classifier: the class token
// ('cls') or the mean of all tokens ('mean'), [b, d_model].
torch::Tensor pool_tokens(const torch::Tensor& h, const std::string& pool);

// What VisionTransformer and VisionDualAttnTransformer share: the sizes resolved from the options,
// the patch embedding, class token and positions, the output layer, and everything done with a
// built model. `Derived` builds its blocks in reset() (through resolve_options,
// register_embeddings and register_blocks) and runs them in its own forward().
// Instantiated for the two models only.
template <class Derived, class Options>
class VisionModelImpl : public torch::nn::Cloneable<Derived> {
 public:
  // `owner` ("VisionTransformer" or "VisionDualAttnTransformer") starts the error messages.
  VisionModelImpl(const Options& options, const char* owner) : options(options), owner_(owner) {}

  // Number of parameters, each shared tensor counted once.
  int64_t get_num_params() const;

  // Writes config.json and model.safetensors into `folder` (pretrained.h; defined in
  // src/pretrained.cpp).
  void save_pretrained(const std::string& folder) const;

  Options options;
  // Resolved from the options, as the reference's attributes of the same names.
  int64_t img_channels = 0, img_width = 0, img_height = 0;  // image_shape
  int64_t patch_width = 0, patch_height = 0;                // patch_size
  int64_t num_patches = 0;  // (img_width / patch_width) * (img_height / patch_height)
  int64_t patch_dim = 0;    // patch_width * patch_height * img_channels

  torch::Tensor pos_embedding;  // [1, num_patches + 1, d_model], N(0, 1)
  torch::Tensor cls_token;      // [1, 1, d_model], N(0, 1)
  // 0: the patch rearrangement (no parameters), 1: LayerNorm(patch_dim), 2: Linear(patch_dim,
  // d_model), 3: LayerNorm(d_model).
  torch::nn::Sequential to_patch_embedding{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear final_out{nullptr};  // d_model -> num_classes

  // The checked image x [b, channels, H, W] as tokens: class token and patches with their
  // positions, [b, n + 1, d_model]; the first step of forward() (also used by model_analysis.h).
  torch::Tensor embed(const torch::Tensor& x);

 protected:
  // Checks the options both models have and sets the resolved sizes above.
  void resolve_options();
  // Builds and registers to_patch_embedding, pos_embedding, cls_token and dropout, in this order.
  void register_embeddings();
  // Registers `blocks` as "encoder_blocks", then builds and registers final_out.
  void register_blocks(const torch::nn::ModuleList& blocks);

  const char* owner_;
};

}  // namespace detail

// ---- VisionTransformer ---------------------------------------------------------------------

struct VisionTransformerOptions {
  VisionTransformerOptions(std::vector<int64_t> image_shape, std::vector<int64_t> patch_size,
                           int64_t num_classes, int64_t d_model, int64_t n_layers, int64_t n_heads,
                           std::optional<int64_t> dff, double dropout_rate, std::string activation,
                           bool norm_first)
      : image_shape_(std::move(image_shape)),
        patch_size_(std::move(patch_size)),
        num_classes_(num_classes),
        d_model_(d_model),
        n_layers_(n_layers),
        n_heads_(n_heads),
        dff_(dff),
        dropout_rate_(dropout_rate),
        activation_(std::move(activation)),
        norm_first_(norm_first) {}

  // (channels, width, height); a JSON list in config.json.
  TORCH_ARG(std::vector<int64_t>, image_shape);
  // (patch_width, patch_height); must divide (width, height).
  TORCH_ARG(std::vector<int64_t>, patch_size);
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_layers);
  TORCH_ARG(int64_t, n_heads);
  // Feed-forward hidden width; None takes FeedForwardBlock's default.
  TORCH_ARG(std::optional<int64_t>, dff);
  // Dropout after the positions are added and inside the blocks (training only).
  TORCH_ARG(double, dropout_rate);
  TORCH_ARG(std::string, activation);
  TORCH_ARG(bool, norm_first);
  // Norm of the encoder blocks ('layernorm', 'rmsnorm', 'none'); the patch embedding always uses
  // LayerNorm.
  TORCH_ARG(std::string, norm_type) = "layernorm";
  TORCH_ARG(bool, bias) = true;
  // 'cls' (the class token's output) or 'mean' (mean over all positions, class token included).
  TORCH_ARG(std::string, pool) = "cls";

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("image_shape", image_shape_);
    v("patch_size", patch_size_);
    v("num_classes", num_classes_);
    v("d_model", d_model_);
    v("n_layers", n_layers_);
    v("n_heads", n_heads_);
    v("dff", dff_);
    v("dropout_rate", dropout_rate_);
    v("activation", activation_);
    v("norm_first", norm_first_);
    v("norm_type", norm_type_);
    v("bias", bias_);
    v("pool", pool_);
  }

  // VisionTransformer(**kwargs): the constructor takes the required keywords (the first fields()
  // above), of these types; a missing or unknown keyword or a value of the wrong type is an error
  // naming it.
  using required_types =
      std::tuple<std::vector<int64_t>, std::vector<int64_t>, int64_t, int64_t, int64_t, int64_t,
                 std::optional<int64_t>, double, std::string, bool>;
  static VisionTransformerOptions from_kwargs(const Kwargs& kwargs,
                                              const std::string& owner = "VisionTransformer") {
    return options_from_kwargs<VisionTransformerOptions>(kwargs, owner);
  }
};

class VisionTransformerImpl
    : public detail::VisionModelImpl<VisionTransformerImpl, VisionTransformerOptions> {
 public:
  explicit VisionTransformerImpl(const VisionTransformerOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // x [b, channels, H, W] (see the file comment) -> logits [b, num_classes].
  torch::Tensor forward(const torch::Tensor& x);

  std::vector<EncoderBlock> encoder_blocks;  // registered as the ModuleList "encoder_blocks"
};

// Defined, for the two models, in vision_models.cpp.
extern template class detail::VisionModelImpl<VisionTransformerImpl, VisionTransformerOptions>;

class VisionTransformer
    : public detail::PretrainedModelHolder<VisionTransformer, VisionTransformerImpl> {
 public:
  using PretrainedModelHolder::PretrainedModelHolder;
};

// ---- VisionDualAttnTransformer -------------------------------------------------------------

struct VisionDualAttnTransformerOptions {
  VisionDualAttnTransformerOptions(std::vector<int64_t> image_shape,
                                   std::vector<int64_t> patch_size, int64_t num_classes,
                                   int64_t d_model, int64_t n_layers, int64_t n_heads_sa,
                                   int64_t n_heads_ra, std::optional<int64_t> dff,
                                   double dropout_rate, std::string activation, bool norm_first,
                                   std::string symbol_retrieval, Kwargs symbol_retrieval_kwargs)
      : image_shape_(std::move(image_shape)),
        patch_size_(std::move(patch_size)),
        num_classes_(num_classes),
        d_model_(d_model),
        n_layers_(n_layers),
        n_heads_sa_(n_heads_sa),
        n_heads_ra_(n_heads_ra),
        dff_(dff),
        dropout_rate_(dropout_rate),
        activation_(std::move(activation)),
        norm_first_(norm_first),
        symbol_retrieval_(std::move(symbol_retrieval)),
        symbol_retrieval_kwargs_(std::move(symbol_retrieval_kwargs)) {}

  // See VisionTransformerOptions.
  TORCH_ARG(std::vector<int64_t>, image_shape);
  TORCH_ARG(std::vector<int64_t>, patch_size);
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, n_layers);
  TORCH_ARG(int64_t, n_heads_sa);
  TORCH_ARG(int64_t, n_heads_ra);
  TORCH_ARG(std::optional<int64_t>, dff);
  TORCH_ARG(double, dropout_rate);
  TORCH_ARG(std::string, activation);
  TORCH_ARG(bool, norm_first);
  // 'symbolic_attention', 'rel_sym_attn', 'positional_symbols' or 'position_relative'; one
  // retriever serves every block.
  TORCH_ARG(std::string, symbol_retrieval);
  TORCH_ARG(Kwargs, symbol_retrieval_kwargs);
  // Relational attention variant of the blocks: 'relational_attention', 'rca' or 'disrca'.
  TORCH_ARG(std::string, ra_type) = "relational_attention";
  // Extra keywords of the relational / self-attention heads (None = none).
  TORCH_ARG(Kwargs, ra_kwargs) = nullptr;
  TORCH_ARG(Kwargs, sa_kwargs) = nullptr;
  TORCH_ARG(std::string, norm_type) = "layernorm";
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(std::string, pool) = "cls";

 public:
  // Every keyword, in the reference's order (read by apply_kwargs / to_kwargs).
  template <class Visitor>
  void fields(Visitor&& v) {
    v("image_shape", image_shape_);
    v("patch_size", patch_size_);
    v("num_classes", num_classes_);
    v("d_model", d_model_);
    v("n_layers", n_layers_);
    v("n_heads_sa", n_heads_sa_);
    v("n_heads_ra", n_heads_ra_);
    v("dff", dff_);
    v("dropout_rate", dropout_rate_);
    v("activation", activation_);
    v("norm_first", norm_first_);
    v("symbol_retrieval", symbol_retrieval_);
    v("symbol_retrieval_kwargs", symbol_retrieval_kwargs_);
    v("ra_type", ra_type_);
    v("ra_kwargs", ra_kwargs_);
    v("sa_kwargs", sa_kwargs_);
    v("norm_type", norm_type_);
    v("bias", bias_);
    v("pool", pool_);
  }

  // VisionDualAttnTransformer(**kwargs): the constructor takes the required keywords (the first
  // fields() above), of these types; a missing or unknown keyword or a value of the wrong type is
  // an error naming it.
  using required_types =
      std::tuple<std::vector<int64_t>, std::vector<int64_t>, int64_t, int64_t, int64_t, int64_t,
                 int64_t, std::optional<int64_t>, double, std::string, bool, std::string, Kwargs>;
  static VisionDualAttnTransformerOptions from_kwargs(
      const Kwargs& kwargs, const std::string& owner = "VisionDualAttnTransformer") {
    return options_from_kwargs<VisionDualAttnTransformerOptions>(kwargs, owner);
  }
};

class VisionDualAttnTransformerImpl
    : public detail::VisionModelImpl<VisionDualAttnTransformerImpl,
                                     VisionDualAttnTransformerOptions> {
 public:
  explicit VisionDualAttnTransformerImpl(const VisionDualAttnTransformerOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // As VisionTransformer::forward; each block first retrieves its symbols from its input.
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::AnyModule symbol_retriever;  // x [b, n, d] -> symbols (make_symbol_retriever)
  std::vector<DualAttnEncoderBlock> encoder_blocks;  // the ModuleList "encoder_blocks"
};

extern template class detail::VisionModelImpl<VisionDualAttnTransformerImpl,
                                              VisionDualAttnTransformerOptions>;

class VisionDualAttnTransformer
    : public detail::PretrainedModelHolder<VisionDualAttnTransformer,
                                           VisionDualAttnTransformerImpl> {
 public:
  using PretrainedModelHolder::PretrainedModelHolder;
};

}  // namespace dual_attention
