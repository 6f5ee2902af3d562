// The library's operators: the maths of relational attention and symbolic attention, registered
// with the PyTorch dispatcher under the namespace `dual_attention` (src/ops.cpp). Python calls them
// as torch.ops.dual_attention.<name> once dual_attention_cpp is imported; C++ calls the functions
// below, which are the registered kernels themselves. The modules (RelationalAttention,
// SymbolicAttention) project their inputs and call these very functions, so a C++ module, a Python
// module that owns its parameters, and a decode loop share one implementation.
//
// Both operators are CompositeImplicitAutograd: their kernels are made of ATen operators, so
// autograd comes from those, and meta / fake tensors run through them: torch.compile and
// torch.export trace them into ATen graphs. The one exception is the blockwise path: two internal
// operators (relational_attention_blockwise_forward and _backward, with their own Autograd and
// meta kernels) that a graph keeps whole. Nothing reads tensor data on the paths a trace takes
// (see RelationalAttentionImplementation).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <tuple>

namespace dual_attention::ops {

// ---------------------------------------------------------------------------------------------
// relational_attention(Tensor q, Tensor k, Tensor q_rel, Tensor k_rel, Tensor sv, Tensor wr,
//     Tensor? attn_mask, bool is_causal, bool relative_symbols, str rel_activation,
//     float dropout_p, bool need_weights, str implementation, int block_size)
//     -> (Tensor, Tensor, Tensor)
//
// The attention of RelationalAttention (Altabaa & Lafferty 2024) after its projections and before
// W_o. This is the one place the formula is written; the module and the kernels point here. For
// query i, key j, query head hh of kv group g(hh) = hh / (h / g), relation l:
//   a^hh_ij = softmax_j( <q_i^hh, k_j^g(hh)> / sqrt(head_dim) )      masked scores are -inf
//   r_ijl   = act( <q_rel_il, k_rel_jl> / sqrt(dr) )                  act = rel_activation
//   heads_i^hh = sum_j a^hh_ij ( sv_j^g(hh) + sum_l r_ijl wr[hh, :, l] )
// with sv_j = W_s s_j (or sv_ij = W_s s_ij with relative symbols) and dropout_p applied to a.
// A row that may attend to nothing is NaN, as in the reference.
//
// Arguments (b batch, n queries, m keys, h query heads, g kv heads dividing h, R relations):
//   q      [b, n, h, key_dim]   attention queries, RoPE already applied
//   k      [b, m, g, key_dim]   attention keys, RoPE already applied
//   q_rel  [b, n, R, dr]        relation queries
//   k_rel  [b, m, R, dr]        relation keys (q_rel itself for symmetric relations)
//   sv     [b, m, g, head_dim]  projected symbols W_s s_j; with relative_symbols [n, m, g,
//   head_dim] wr     [h, head_dim, R]     the relations' value map W_r attn_mask   boolean,
//   broadcastable to [n, m], True = may attend; not together with is_causal is_causal   query i
//   sees keys j <= i (top-left aligned when n != m) rel_activation  a name of the activation table
//   (model_utils.h: get_activation) dropout_p   dropout on the attention probabilities in [0, 1];
//   pass 0 outside training need_weights  return the scores and relations (always materialises)
//   implementation  "auto" | "materialize" | "blockwise" | "sdpa"
//   (RelationalAttentionImplementation) block_size  most query rows per block of the blockwise
//   path, positive
// q, k, q_rel, k_rel, sv and wr share one floating dtype (float32, float64, bfloat16, float16) and
// one device. Returns (heads [b, n, h, head_dim], attn_scores [b, h, n, m], relations [b, n, m,
// R]); with need_weights=false the last two are empty tensors (numel 0), never undefined ones. A
// wrong shape, dtype, device or option is a c10::Error naming the argument, the value received and
// what was expected ("relational_attention: sv must be ...").
// ---------------------------------------------------------------------------------------------
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> relational_attention(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& q_rel,
    const torch::Tensor& k_rel, const torch::Tensor& sv, const torch::Tensor& wr,
    const std::optional<torch::Tensor>& attn_mask, bool is_causal, bool relative_symbols,
    std::string_view rel_activation, double dropout_p, bool need_weights,
    std::string_view implementation, int64_t block_size);

// How relational_attention evaluates when need_weights=false (need_weights=true materialises).
enum class RelationalAttentionImplementation {
  // SDPA on CUDA for identity relations without relative symbols, a mask or float64; on the CPU,
  // Materialize for short sequences (n <= kMaterializeMaxLength with at most
  // kMaterializeMaxElements elements per [b, heads, n, n] tensor), where it is faster; Blockwise
  // otherwise; under a trace (is_traced) the same, but Materialize with dropout (a graph would
  // freeze the blockwise path's seed); Materialize when n != m or a size is 0.
  Auto,
  // The reference's computation: [b, h, n, m] scores and [b, n, m, R] relations in memory.
  Materialize,
  // Blocks of at most `block_size` query rows against the keys they may see, and a custom
  // backward that recomputes each block: memory O(n) plus a few block-sized temporaries. Needs
  // m = n. Eager-mode only in practice: with an attn_mask it reads the mask's data to cut each
  // block's key range, and with dropout it draws its seed when called (an error under a trace,
  // which would freeze it). Two operators, relational_attention_blockwise_forward and _backward,
  // with meta kernels: torch.compile and torch.export keep them whole in their graphs.
  Blockwise,
  // One scaled_dot_product_attention with values [sv | relation keys]; identity relations and
  // per-position symbols only (sum_j a_ij <qrel_i, krel_j> = <qrel_i, sum_j a_ij krel_j>).
  SDPA,
};
// Auto's limits for materialising on the CPU (measured by benchmarks/bench_relational.py:
// materialising wins up to n = 256, blockwise from 512).
constexpr int64_t kMaterializeMaxLength = 256;
constexpr int64_t kMaterializeMaxElements = int64_t{1} << 22;  // 16 MiB in float32

// "auto", "materialize", "blockwise", "sdpa".
std::ostream& operator<<(std::ostream& stream, RelationalAttentionImplementation implementation);
// The implementation called `name`; another name is a c10::Error from `owner` listing the four.
RelationalAttentionImplementation parse_relational_attention_implementation(
    std::string_view name, std::string_view owner = "relational_attention");

// Whether `t` is being traced rather than computed: a fake, functional or proxy tensor (the Python
// dispatch key, on the tensor or from an active dispatch mode) or a tensor on the meta device.
bool is_traced(const torch::Tensor& t);

// What decides relational_attention's path, besides the requested implementation.
struct RelationalAttentionPathInputs {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;
  int64_t batch = 0, n_queries = 0, n_keys = 0, n_heads = 0, n_relations = 0;
  std::string rel_activation = "identity";
  bool relative_symbols = false, has_mask = false, need_weights = false, traced = false;
  double dropout_p = 0.0;
};
// The path relational_attention takes (never Auto): need_weights or an empty input materialises,
// an explicit implementation is kept, Auto is resolved as its comment says.
RelationalAttentionImplementation resolve_relational_attention_path(
    RelationalAttentionImplementation requested, const RelationalAttentionPathInputs& inputs);
// The same for relational_attention's own arguments (read from their shapes, device and dtype).
RelationalAttentionImplementation relational_attention_path(
    RelationalAttentionImplementation requested, const torch::Tensor& q, const torch::Tensor& k,
    const torch::Tensor& q_rel, bool has_mask, bool relative_symbols,
    std::string_view rel_activation, bool need_weights, double dropout_p = 0.0);

// The three paths, for callers that have checked their arguments as relational_attention does and
// chosen the path themselves (RelationalAttention::forward_cached). Arguments as above, except:
// materialize takes the resolved boolean `mask` (causality included) broadcastable to [b, 1, n, m]
// and returns (heads, attn_scores, relations); blockwise (m = n) and sdpa take attn_mask [n, m] or
// an undefined tensor, and is_causal, and return the heads. Blockwise and sdpa live in
// src/relational_attention_fast.cpp.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> relational_attention_materialize(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& q_rel,
    const torch::Tensor& k_rel, const torch::Tensor& sv, const torch::Tensor& wr,
    const torch::Tensor& mask, bool relative_symbols, const std::string& rel_activation,
    double dropout_p);
torch::Tensor relational_attention_blockwise(const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& q_rel, const torch::Tensor& k_rel,
                                             const torch::Tensor& sv, const torch::Tensor& wr,
                                             const torch::Tensor& attn_mask, bool is_causal,
                                             bool relative_symbols,
                                             const std::string& rel_activation, double dropout_p,
                                             int64_t block_size);
torch::Tensor relational_attention_sdpa(const torch::Tensor& q, const torch::Tensor& k,
                                        const torch::Tensor& q_rel, const torch::Tensor& k_rel,
                                        const torch::Tensor& sv, const torch::Tensor& wr,
                                        const torch::Tensor& attn_mask, bool is_causal,
                                        bool relative_symbols, const std::string& rel_activation,
                                        double dropout_p);

// ---------------------------------------------------------------------------------------------
// symbolic_attention(Tensor query, Tensor template_features, Tensor symbol_library, int n_heads,
//     float dropout_p, float? scale) -> Tensor
//
// The symbol retrieval of SymbolicAttention after its query projection: per head hh,
//   out^hh = softmax( query^hh F^hh^T * scale ) S^hh
// with F = template_features and S = symbol_library split into n_heads column blocks, scale
// defaulting to 1 / sqrt(d / n_heads), and dropout_p on the attention weights (0 outside training).
//   query [b, n, d]; template_features, symbol_library [n_symbols, d]; d divisible by n_heads.
// Returns [b, n, d]. Errors name the argument ("symbolic_attention: query must be ...").
// ---------------------------------------------------------------------------------------------
torch::Tensor symbolic_attention(const torch::Tensor& query, const torch::Tensor& template_features,
                                 const torch::Tensor& symbol_library, int64_t n_heads,
                                 double dropout_p, std::optional<double> scale);

}  // namespace dual_attention::ops
