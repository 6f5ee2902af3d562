// Parameter counts estimated from a model's options alone, before anything is allocated: what
// from_pretrained checks against PretrainedOptions::max_parameter_bytes, so that a hostile or
// mistaken config.json (d_model 1e9, n_layers 1e6, n_symbols 1e12, ...) is refused with an error
// instead of being allocated until the process is killed.
//
// The counts follow the modules' shapes (reference-notes.md, "Modules"): every Linear and
// Embedding weight and bias, RelationalAttention's wr, the symbol libraries, the positional
// tables (parameters or buffers, both allocated). Small terms (norm weights) are counted too, so
// the estimate is close to get_num_params(); tests compare the two. The arithmetic is in double:
// absurd values give huge estimates, never overflow. Values the constructors will refuse
// (negative sizes, zero heads) count as 0 here; the constructor then reports them.
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"
#include "dual_attention/seq2seq_models.h"
#include "dual_attention/vision_models.h"

namespace dual_attention {
namespace {

double size_of(int64_t n) { return n > 0 ? static_cast<double>(n) : 0.0; }

// kwargs[key] when it is an int, else `fallback` (a missing key takes the default; a mistyped one
// is the constructor's error to report).
double kwarg(const Kwargs& kwargs, const char* key, double fallback) {
  if (!kwargs.is_object() || !kwargs.contains(key)) return fallback;
  const Kwargs& v = kwargs[key];
  if (!v.is_number_integer()) return fallback;
  return v.is_number_unsigned() ? static_cast<double>(v.get<uint64_t>())
                                : std::max(0.0, static_cast<double>(v.get<int64_t>()));
}

Kwargs sub_kwargs(const Kwargs& kwargs, const char* key) {
  return kwargs.is_object() && kwargs.contains(key) ? kwargs[key] : Kwargs(nullptr);
}

double linear(double in, double out, bool bias = true) { return in * out + (bias ? out : 0.0); }

// What both attentions read from their keywords: head_dim = d // total_n_heads, key_dim (default
// head_dim) and n_kv_heads (default n_heads).
struct HeadSizes {
  double head_dim, key_dim, kv_heads;
};

HeadSizes head_sizes(double d, double n_heads, double total_heads, const Kwargs& kw) {
  const double total = kwarg(kw, "total_n_heads", total_heads);
  const double head_dim = total > 0 ? std::floor(d / total) : 0.0;
  return {head_dim, kwarg(kw, "key_dim", head_dim), kwarg(kw, "n_kv_heads", n_heads)};
}

// Attention(d, n_heads, total_n_heads): wq, wk, wv, wo with kv heads and key_dim from `kw`.
double attention(double d, double n_heads, double total_heads, const Kwargs& kw) {
  if (n_heads <= 0) return 0.0;
  const auto [head_dim, key_dim, kv_heads] = head_sizes(d, n_heads, total_heads, kw);
  return linear(d, n_heads * key_dim) + linear(d, kv_heads * key_dim) +
         linear(d, kv_heads * head_dim) + linear(n_heads * head_dim, d);
}

// RelationalAttention: wq_attn, wk_attn, wq_rel, wk_rel, wr, wv (symbols), wo.
double relational_attention(double d, double n_heads, double total_heads, const Kwargs& kw) {
  if (n_heads <= 0) return 0.0;
  const auto [head_dim, key_dim, kv_heads] = head_sizes(d, n_heads, total_heads, kw);
  const double n_relations = kwarg(kw, "n_relations", n_heads);
  const double rel_proj_dim =
      kwarg(kw, "rel_proj_dim", n_relations > 0 ? std::floor(head_dim * n_heads / n_relations) : 0);
  return linear(d, n_heads * key_dim) + linear(d, kv_heads * key_dim) +
         2 * linear(d, n_relations * rel_proj_dim) + n_heads * head_dim * n_relations +
         linear(d, n_heads * head_dim) + linear(n_heads * head_dim, d);
}

double feed_forward(double d, const std::optional<int64_t>& dff, const std::string& activation) {
  const bool swiglu = activation == "swiglu";
  const double hidden = dff ? size_of(*dff) : (swiglu ? std::floor(2.0 / 3.0 * 4 * d) : 4 * d);
  return linear(d, hidden) + linear(hidden, d) + (swiglu ? linear(d, hidden) : 0.0);
}

// DualAttention (sa + ra heads side by side) plus, for decoder blocks, a cross-attention.
double dual_attn_block(double d, double sa, double ra, double cross,
                       const std::optional<int64_t>& dff, const std::string& activation,
                       const Kwargs& sa_kwargs, const Kwargs& ra_kwargs,
                       const Kwargs& cross_kwargs = nullptr) {
  return attention(d, sa, sa + ra, sa_kwargs) + relational_attention(d, ra, sa + ra, ra_kwargs) +
         attention(d, cross, cross, cross_kwargs) + feed_forward(d, dff, activation) + 6 * d;
}

// The symbol retriever named `name` (the names of make_symbol_retriever).
double symbol_retriever(const std::string& name, const Kwargs& kw) {
  if (name == "symbolic_attention") {
    const double d = kwarg(kw, "d_model", 0), n_symbols = kwarg(kw, "n_symbols", 0);
    return linear(d, d) + 2 * n_symbols * d;
  }
  if (name == "positional_symbols") return kwarg(kw, "symbol_dim", 0) * kwarg(kw, "max_length", 0);
  if (name == "position_relative")
    return kwarg(kw, "symbol_dim", 0) * (2 * kwarg(kw, "max_rel_pos", 0) + 1);
  if (name == "rel_sym_attn") {
    const double d = kwarg(kw, "d_model", 0), n_symbols = kwarg(kw, "n_symbols", 0);
    return 4 * linear(d, d) + 2 * n_symbols * d;
  }
  return 0.0;  // an unknown name: the constructor reports it
}

double token_or_vector_embedder(const Kwargs& spec, double d) {
  if (!spec.is_object()) return 0.0;
  return spec.value("type", Kwargs()) == "token" ? kwarg(spec, "vocab_size", 0) * d
                                                 : linear(kwarg(spec, "dim", 0), d);
}

double product(const std::vector<int64_t>& values) {
  double p = 1.0;
  for (int64_t v : values) p *= size_of(v);
  return p;
}

// Patch embedding (LayerNorm, Linear, LayerNorm), class token, positions and the head.
double vision_stem(const std::vector<int64_t>& image_shape, const std::vector<int64_t>& patch_size,
                   double d, double num_classes) {
  const double pixels = product(image_shape), patch_area = product(patch_size);
  const double channels = image_shape.empty() ? 0.0 : size_of(image_shape[0]);
  const double patch_dim = patch_area * channels;
  const double n_patches = patch_dim > 0 ? std::floor(pixels / patch_dim) : 0.0;
  return 2 * patch_dim + linear(patch_dim, d) + 2 * d + d + (n_patches + 1) * d +
         linear(d, num_classes) + 2 * d;
}

}  // namespace

double estimate_parameter_count(const DualAttnTransformerLMOptions& o) {
  const double d = size_of(o.d_model()), layers = size_of(o.n_layers());
  // symbol_retriever_config's flag may be false or 0 (bool keywords take 0/1).
  const Kwargs& config = o.symbol_retriever_config();
  const Kwargs flag =
      config.is_object() ? config.value("shared_symbol_retriever", Kwargs(true)) : Kwargs(true);
  const bool shared = !(flag == Kwargs(false) || flag == Kwargs(0));
  const double retriever = symbol_retriever(o.symbol_retrieval(), o.symbol_retrieval_kwargs());
  return size_of(o.vocab_size()) * d +
         (o.pos_enc_type() == "pos_emb" ? size_of(o.max_block_size()) * d : 0.0) +
         layers * dual_attn_block(d, size_of(o.n_heads_sa()), size_of(o.n_heads_ra()), 0, o.dff(),
                                  o.activation(), o.sa_kwargs(), o.ra_kwargs()) +
         (shared ? std::min(layers, 1.0) : layers) * retriever + 2 * d;
}

double estimate_parameter_count(const TransformerLMOptions& o) {
  const double d = size_of(o.d_model()), heads = size_of(o.n_heads());
  const Kwargs attn_kwargs = sub_kwargs(o.block_kwargs(), "attn_kwargs");
  return size_of(o.vocab_size()) * d +
         (o.pos_enc_type() == "pos_emb" ? size_of(o.max_block_size()) * d : 0.0) +
         size_of(o.n_layers()) * (attention(d, heads, heads, attn_kwargs) +
                                  feed_forward(d, o.dff(), o.activation()) + 4 * d) +
         2 * d;
}

namespace {

// What both seq2seq models share: embedders, sinusoidal tables, final_out.
double seq2seq_stem(const Kwargs& input_spec, const Kwargs& output_spec, double d, double out_dim,
                    double in_block, double out_block) {
  return token_or_vector_embedder(input_spec, d) + token_or_vector_embedder(output_spec, d) +
         (in_block + out_block) * d + linear(d, out_dim);
}

std::optional<int64_t> optional_int(const Kwargs& kw, const char* key) {
  if (!kw.is_object() || !kw.contains(key) || !kw[key].is_number_integer()) return std::nullopt;
  return static_cast<int64_t>(kwarg(kw, key, 0));
}

std::string activation_of(const Kwargs& kw) {
  return kw.is_object() && kw.contains("activation") && kw["activation"].is_string()
             ? kw["activation"].get<std::string>()
             : "relu";
}

}  // namespace

double estimate_parameter_count(const Seq2SeqTransformerOptions& o) {
  const double d = size_of(o.d_model());
  const Kwargs& enc = o.encoder_kwargs();
  const Kwargs& dec = o.decoder_kwargs();
  const double enc_heads = kwarg(enc, "n_heads", 0), dec_heads = kwarg(dec, "n_heads", 0),
               cross_heads = kwarg(dec, "n_heads_cross", 0);
  const double encoder = attention(d, enc_heads, enc_heads, nullptr) +
                         feed_forward(d, optional_int(enc, "dff"), activation_of(enc)) + 4 * d;
  const double decoder = attention(d, dec_heads, dec_heads, nullptr) +
                         attention(d, cross_heads, cross_heads, nullptr) +
                         feed_forward(d, optional_int(dec, "dff"), activation_of(dec)) + 6 * d;
  return seq2seq_stem(o.input_spec(), o.output_spec(), d, size_of(o.out_dim()),
                      size_of(o.in_block_size()), size_of(o.out_block_size())) +
         size_of(o.n_layers_enc()) * encoder + size_of(o.n_layers_dec()) * decoder;
}

double estimate_parameter_count(const Seq2SeqDualAttnTransformerOptions& o) {
  const double d = size_of(o.d_model());
  const Kwargs& enc = o.encoder_kwargs();
  const Kwargs& dec = o.decoder_kwargs();
  const double encoder = dual_attn_block(
      d, kwarg(enc, "n_heads_sa", 0), kwarg(enc, "n_heads_ra", 0), 0, optional_int(enc, "dff"),
      activation_of(enc), sub_kwargs(enc, "sa_kwargs"), sub_kwargs(enc, "ra_kwargs"));
  const double decoder = dual_attn_block(
      d, kwarg(dec, "n_heads_sa", 0), kwarg(dec, "n_heads_ra", 0), kwarg(dec, "n_heads_cross", 0),
      optional_int(dec, "dff"), activation_of(dec), sub_kwargs(dec, "sa_kwargs"),
      sub_kwargs(dec, "ra_kwargs"), sub_kwargs(dec, "cross_kwargs"));
  // The reference builds n_layers_enc decoder blocks (see seq2seq_models.h).
  return seq2seq_stem(o.input_spec(), o.output_spec(), d, size_of(o.out_dim()),
                      size_of(o.in_block_size()), size_of(o.out_block_size())) +
         size_of(o.n_layers_enc()) * (encoder + decoder) +
         symbol_retriever(o.symbol_retrieval(), o.symbol_retrieval_kwargs());
}

double estimate_parameter_count(const VisionTransformerOptions& o) {
  const double d = size_of(o.d_model()), heads = size_of(o.n_heads());
  return vision_stem(o.image_shape(), o.patch_size(), d, size_of(o.num_classes())) +
         size_of(o.n_layers()) * (attention(d, heads, heads, nullptr) +
                                  feed_forward(d, o.dff(), o.activation()) + 4 * d);
}

double estimate_parameter_count(const VisionDualAttnTransformerOptions& o) {
  const double d = size_of(o.d_model());
  return vision_stem(o.image_shape(), o.patch_size(), d, size_of(o.num_classes())) +
         size_of(o.n_layers()) * dual_attn_block(d, size_of(o.n_heads_sa()),
                                                 size_of(o.n_heads_ra()), 0, o.dff(),
                                                 o.activation(), o.sa_kwargs(), o.ra_kwargs()) +
         symbol_retriever(o.symbol_retrieval(), o.symbol_retrieval_kwargs());
}

}  // namespace dual_attention
