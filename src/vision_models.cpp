#include "dual_attention/vision_models.h"

#include <algorithm>
#include <sstream>

#include "dual_attention/symbol_retrieval.h"

namespace dual_attention {
namespace {

std::string join_ints(const std::vector<int64_t>& values) {
  std::ostringstream out;
  out << "(";
  for (std::size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << ")";
  return out.str();
}

bool all_positive(const std::vector<int64_t>& values) {
  return std::all_of(values.begin(), values.end(), [](int64_t v) { return v > 0; });
}

// 0: 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)' with p1 = patch_height, p2 = patch_width;
// 1: LayerNorm(patch_dim); 2: Linear(patch_dim, d_model); 3: LayerNorm(d_model).
template <class Model>
torch::nn::Sequential make_patch_embedding(const Model& model, int64_t d_model) {
  const int64_t p1 = model.patch_height, p2 = model.patch_width;
  auto to_patches = [p1, p2](const torch::Tensor& x) {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2) / p1, w = x.size(3) / p2;
    return x.reshape({b, c, h, p1, w, p2})
        .permute({0, 2, 4, 3, 5, 1})  // [b, h, w, p1, p2, c]
        .reshape({b, h * w, p1 * p2 * c});
  };
  return torch::nn::Sequential(torch::nn::Functional(to_patches),
                               torch::nn::LayerNorm(torch::nn::LayerNormOptions({model.patch_dim})),
                               torch::nn::Linear(model.patch_dim, d_model),
                               torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})));
}

// An image the reference can take: [b, channels, H, W], H a multiple of patch_height, W of
// patch_width, at most num_patches patches.
template <class Model>
void check_image(const torch::Tensor& x, const Model& m, const char* owner) {
  TORCH_CHECK(x.defined(), owner, ": x is required");
  TORCH_CHECK(x.dim() == 4, owner,
              ": x must be images [batch, channels, height, width], got a tensor of shape ",
              x.sizes());
  TORCH_CHECK(x.is_floating_point(), owner, ": x must be a floating-point tensor, got dtype ",
              x.scalar_type());
  TORCH_CHECK(x.size(1) == m.img_channels, owner, ": x has ", x.size(1), " channels (shape ",
              x.sizes(), "), expected ", m.img_channels);
  TORCH_CHECK(x.size(2) % m.patch_height == 0 && x.size(3) % m.patch_width == 0, owner,
              ": x of shape ", x.sizes(),
              " does not split into patches: its height must be a multiple of patch_height (",
              m.patch_height, ") and its width of patch_width (", m.patch_width, ")");
  const int64_t n = (x.size(2) / m.patch_height) * (x.size(3) / m.patch_width);
  TORCH_CHECK(n <= m.num_patches, owner, ": x of shape ", x.sizes(), " has ", n,
              " patches, more than the model's ", m.num_patches, " (image_shape: height ",
              m.img_height, ", width ", m.img_width, ")");
}

// dropout(concat(cls_token, patches) + pos_embedding[:, :n + 1]) -> [b, n + 1, d_model].
template <class Model>
torch::Tensor embed_image(const torch::Tensor& x, Model& m) {
  auto patches = m.to_patch_embedding->forward(x);  // [b, n, d]
  const int64_t b = patches.size(0), n = patches.size(1);
  auto tokens = torch::cat({m.cls_token.expand({b, 1, m.cls_token.size(2)}), patches}, 1);
  return m.dropout(tokens + m.pos_embedding.slice(/*dim=*/1, 0, n + 1));
}

}  // namespace

torch::Tensor detail::pool_tokens(const torch::Tensor& h, const std::string& pool) {
  return pool == "cls" ? h.select(/*dim=*/1, 0) : h.mean(/*dim=*/1);  // [b, d]
}

const std::vector<std::string>& vision_pool_names() {
  static const std::vector<std::string> names = {"cls", "mean"};
  return names;
}

// ---- What both models share ----------------------------------------------------------------

namespace detail {

template <class Derived, class Options>
void VisionModelImpl<Derived, Options>::resolve_options() {
  const auto& o = options;
  const auto& image_shape = o.image_shape();
  const auto& patch_size = o.patch_size();
  TORCH_CHECK(image_shape.size() == 3 && all_positive(image_shape), owner_,
              ": image_shape must be three positive ints (channels, width, height), got ",
              join_ints(image_shape));
  TORCH_CHECK(patch_size.size() == 2 && all_positive(patch_size), owner_,
              ": patch_size must be two positive ints (patch_width, patch_height), got ",
              join_ints(patch_size));
  TORCH_CHECK(image_shape[1] % patch_size[0] == 0 && image_shape[2] % patch_size[1] == 0, owner_,
              ": image_shape ", join_ints(image_shape),
              " (channels, width, height) is not divisible by patch_size ", join_ints(patch_size),
              " (patch_width, patch_height)");
  TORCH_CHECK(o.num_classes() > 0, owner_, ": num_classes must be positive, got ", o.num_classes());
  TORCH_CHECK(o.d_model() > 0, owner_, ": d_model must be positive, got ", o.d_model());
  TORCH_CHECK(o.n_layers() >= 0, owner_, ": n_layers must be >= 0, got ", o.n_layers());
  TORCH_CHECK(o.dropout_rate() >= 0.0 && o.dropout_rate() <= 1.0, owner_,
              ": dropout_rate must be in [0, 1], got ", o.dropout_rate());
  check_one_of(owner_, "pool", o.pool(), vision_pool_names());
  img_channels = image_shape[0];
  img_width = image_shape[1];
  img_height = image_shape[2];
  patch_width = patch_size[0];
  patch_height = patch_size[1];
  num_patches = (img_width / patch_width) * (img_height / patch_height);
  patch_dim = patch_width * patch_height * img_channels;
}

template <class Derived, class Options>
void VisionModelImpl<Derived, Options>::register_embeddings() {
  const int64_t d_model = options.d_model();
  to_patch_embedding =
      this->register_module("to_patch_embedding", make_patch_embedding(*this, d_model));
  pos_embedding =
      this->register_parameter("pos_embedding", torch::randn({1, num_patches + 1, d_model}));
  cls_token = this->register_parameter("cls_token", torch::randn({1, 1, d_model}));
  dropout = this->register_module("dropout", torch::nn::Dropout(options.dropout_rate()));
}

template <class Derived, class Options>
void VisionModelImpl<Derived, Options>::register_blocks(const torch::nn::ModuleList& blocks) {
  this->register_module("encoder_blocks", blocks);
  final_out = this->register_module("final_out",
                                    torch::nn::Linear(options.d_model(), options.num_classes()));
}

template <class Derived, class Options>
torch::Tensor VisionModelImpl<Derived, Options>::embed(const torch::Tensor& x) {
  check_image(x, *this, owner_);
  return embed_image(x, *this);  // [b, n + 1, d]
}

template <class Derived, class Options>
int64_t VisionModelImpl<Derived, Options>::get_num_params() const {
  return count_unique_parameters(*this);
}

template class VisionModelImpl<VisionTransformerImpl, VisionTransformerOptions>;
template class VisionModelImpl<VisionDualAttnTransformerImpl, VisionDualAttnTransformerOptions>;

}  // namespace detail

// ---- VisionTransformer ---------------------------------------------------------------------

VisionTransformerImpl::VisionTransformerImpl(const VisionTransformerOptions& options_)
    : VisionModelImpl(options_, "VisionTransformer") {
  reset();
}

void VisionTransformerImpl::reset() {
  const auto& o = options;
  resolve_options();
  register_embeddings();
  torch::nn::ModuleList blocks;
  encoder_blocks.clear();
  for (int64_t i = 0; i < o.n_layers(); ++i) {
    encoder_blocks.emplace_back(EncoderBlockOptions(o.d_model(), o.n_heads(), o.dff(),
                                                    o.dropout_rate(), o.activation(),
                                                    o.norm_first())
                                    .norm_type(o.norm_type())
                                    .bias(o.bias())
                                    .causal(false));
    blocks->push_back(encoder_blocks.back());
  }
  register_blocks(blocks);
}

void VisionTransformerImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha
         << "dual_attention::VisionTransformer(image_shape=" << join_ints(options.image_shape())
         << ", patch_size=" << join_ints(options.patch_size())
         << ", num_classes=" << options.num_classes() << ", d_model=" << options.d_model()
         << ", n_layers=" << options.n_layers() << ", n_heads=" << options.n_heads()
         << ", pool=" << options.pool() << ")";
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& x) {
  auto h = embed(x);                                         // [b, n + 1, d]
  for (auto& block : encoder_blocks) h = block(h);           // [b, n + 1, d]
  return final_out(detail::pool_tokens(h, options.pool()));  // [b, num_classes]
}

// ---- VisionDualAttnTransformer -------------------------------------------------------------

VisionDualAttnTransformerImpl::VisionDualAttnTransformerImpl(
    const VisionDualAttnTransformerOptions& options_)
    : VisionModelImpl(options_, "VisionDualAttnTransformer") {
  reset();
}

void VisionDualAttnTransformerImpl::reset() {
  const auto& o = options;
  resolve_options();
  symbol_retriever = make_symbol_retriever(o.symbol_retrieval(), o.symbol_retrieval_kwargs(),
                                           /*allow_rel_sym_attn=*/true);
  register_module("symbol_retriever", symbol_retriever.ptr());
  register_embeddings();
  torch::nn::ModuleList blocks;
  encoder_blocks.clear();
  for (int64_t i = 0; i < o.n_layers(); ++i) {
    encoder_blocks.emplace_back(
        DualAttnEncoderBlockOptions(o.d_model(), o.n_heads_sa(), o.n_heads_ra(), o.dff(),
                                    o.activation(), o.dropout_rate(), o.norm_first())
            .norm_type(o.norm_type())
            .bias(o.bias())
            .causal(false)
            .ra_type(o.ra_type())
            .ra_kwargs(o.ra_kwargs().is_null() ? Kwargs::object() : o.ra_kwargs())
            .sa_kwargs(o.sa_kwargs().is_null() ? Kwargs::object() : o.sa_kwargs()));
    blocks->push_back(encoder_blocks.back());
  }
  register_blocks(blocks);
}

void VisionDualAttnTransformerImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "dual_attention::VisionDualAttnTransformer(image_shape="
         << join_ints(options.image_shape()) << ", patch_size=" << join_ints(options.patch_size())
         << ", num_classes=" << options.num_classes() << ", d_model=" << options.d_model()
         << ", n_layers=" << options.n_layers() << ", n_heads_sa=" << options.n_heads_sa()
         << ", n_heads_ra=" << options.n_heads_ra()
         << ", symbol_retrieval=" << options.symbol_retrieval() << ", pool=" << options.pool()
         << ")";
}

torch::Tensor VisionDualAttnTransformerImpl::forward(const torch::Tensor& x) {
  auto h = embed(x);                                                             // [b, n + 1, d]
  for (auto& block : encoder_blocks) h = block(h, symbol_retriever.forward(h));  // [b, n + 1, d]
  return final_out(detail::pool_tokens(h, options.pool()));                      // [b, num_classes]
}

}  // namespace dual_attention
