// The blockwise and SDPA paths of ops::relational_attention (the formula is in ops.h). They compute
// what the materialising path computes without an n x n tensor per head or relation:
// - Blockwise: query rows in blocks of at most `block_size`, each against the keys it may see (a
//   causal block stops at its last row; an explicit mask cuts the columns no row of the block
//   sees). Two operators, relational_attention_blockwise_forward and _backward, joined by an
//   Autograd kernel, save only the O(n) inputs and outputs and recompute each block in backward,
//   as flash attention does. With meta kernels, a trace (torch.compile, torch.export) keeps them
//   as two opaque operators.
// - SDPA: with identity relations sum_j a_ij <qrel_il, krel_jl> = <qrel_il, sum_j a_ij krel_jl>, so
//   the relational term is attention whose values are the relation keys. One fused attention with
//   values [s W_s | krel] gives both terms.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <string_view>
#include <tuple>

#include "dual_attention/attention_utils.h"
#include "dual_attention/model_utils.h"
#include "dual_attention/ops.h"

namespace dual_attention {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Elements of one block tensor ([rows, batch * heads, keys]) beyond which a block gets fewer rows
// than block_size (4 MiB in float32), down to kMinBlockRows: bounds the memory of long sequences
// while keeping the matmuls wide enough to be efficient (each packs a key panel for its rows).
constexpr int64_t kBlockElements = int64_t{1} << 20;
constexpr int64_t kMinBlockRows = 32;

// What a blockwise evaluation needs besides tensors (the scalar arguments of the operators).
struct BlockwiseConfig {
  int64_t block_size = 128;
  bool causal = false;
  double attn_scale = 1.0, rel_scale = 1.0;
  std::string rel_activation = "identity";
  // Attention dropout probability (0 outside training) and the seed its masks derive from.
  double dropout = 0.0;
  int64_t seed = 0;
};

BlockwiseConfig config(bool is_causal, double attn_scale, double rel_scale,
                       std::string_view rel_activation, double dropout_p, int64_t seed,
                       int64_t block_size) {
  BlockwiseConfig c;
  c.block_size = block_size;
  c.causal = is_causal;
  c.attn_scale = attn_scale;
  c.rel_scale = rel_scale;
  c.rel_activation = std::string(rel_activation);
  c.dropout = dropout_p;
  c.seed = seed;
  return c;
}

Tensor value_or_undefined(const std::optional<Tensor>& t) { return t ? *t : Tensor(); }

// The tensors of one evaluation, in the layouts the projections produce:
//   q [b, n, h, key_dim], k [b, n, g, key_dim] (g kv heads; query head hh uses kv head hh / rep)
//   v [b, n, g, head_dim]: projected symbols (undefined with relative symbols)
//   symbols [n, n, d]: relative symbols, each query head attending all d columns (undefined
//   otherwise)
//   q_rel, k_rel [b, n, R, rel_proj_dim]; mask [n, n] boolean or undefined
struct BlockInputs {
  Tensor q, k, v, symbols, q_rel, k_rel, mask;
  int64_t b() const { return q.size(0); }
  int64_t n() const { return q.size(1); }
  int64_t heads() const { return q.size(2); }
  int64_t rep() const { return q.size(2) / k.size(2); }
  int64_t relations() const { return q_rel.size(2); }
};

// One query block: rows [i0, i1), keys [j0, j1) (every key outside is masked for every row of the
// block, so leaving it out changes nothing). Block tensors are "row-major": [rows, b * h, keys],
// one [b * h, keys] matrix per query row, so that per-row contractions are batched matmuls.
struct Block {
  int64_t index, i0, i1, j0, j1;
  int64_t rows() const { return i1 - i0; }
  int64_t keys() const { return j1 - j0; }
};

// The blocks of a sequence of length n, each with the key range it needs; `row_width` is the number
// of block-tensor elements per (query row, key).
std::vector<Block> make_blocks(int64_t n, int64_t row_width, const BlockwiseConfig& c,
                               const Tensor& mask) {
  // Softmax relations normalise over every key j, masked or not, so their rows are never cut.
  const bool full_rows = c.rel_activation == "softmax";
  std::vector<Block> blocks;
  for (int64_t i0 = 0, index = 0; i0 < n; ++index) {
    const int64_t most_keys = !full_rows && c.causal ? std::min(n, i0 + c.block_size) : n;
    const int64_t rows = std::min(
        c.block_size,
        std::max(kMinBlockRows, kBlockElements / std::max<int64_t>(1, row_width * most_keys)));
    const int64_t i1 = std::min(n, i0 + rows);
    int64_t j0 = 0, j1 = n;
    if (!full_rows && c.causal) j1 = i1;
    if (!full_rows && mask.defined()) {
      auto visible = mask.slice(0, i0, i1).any(0).nonzero().cpu();  // [k, 1]
      if (visible.size(0) > 0) {
        j0 = visible[0][0].item<int64_t>();
        j1 = visible[-1][0].item<int64_t>() + 1;
      } else {
        j1 = 1;  // every row masked: one fully masked column gives the reference's NaN rows
      }
    }
    blocks.push_back({index, i0, i1, j0, j1});
    i0 = i1;
  }
  return blocks;
}

// Runs body(block, thread) for every block. On the CPU the intra-op threads share the blocks in one
// parallel region (the ops inside then run single-threaded: one synchronisation per pass instead of
// one per op), each taking the next block as it finishes one, largest first, so that a thread the
// system holds back delays the others by one block at most. Elsewhere blocks run in order.
template <class Body>
void for_each_block(std::vector<Block> blocks, const Tensor& like, const Body& body) {
  const int64_t count = static_cast<int64_t>(blocks.size());
  const int64_t threads = at::get_num_threads();
  if (!like.device().is_cpu() || threads < 2 || count < 2 * threads || at::in_parallel_region()) {
    for (const auto& blk : blocks) body(blk, 0);
    return;
  }
  std::stable_sort(blocks.begin(), blocks.end(), [](const Block& x, const Block& y) {
    return x.rows() * x.keys() > y.rows() * y.keys();
  });
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    torch::NoGradGuard no_grad;  // grad mode is thread-local, and on in the worker threads
    const int thread = at::get_thread_num();
    for (int64_t k = next++; k < count; k = next++) body(blocks[k], thread);
  });
}

// out[:, (bb, hh), :] = alpha * a(bb, hh) @ b(bb, hh)^T (+ beta * out) for every batch element bb
// and head hh, with out row-major [rows, b * heads, cols] and a, b 2-D (strided) matrices.
template <class A, class B>
void per_head_matmul(const Tensor& out, int64_t b, int64_t heads, const A& a, const B& bt,
                     double beta, double alpha) {
  for (int64_t bb = 0; bb < b; ++bb) {
    for (int64_t hh = 0; hh < heads; ++hh) {
      out.select(1, bb * heads + hh).addmm_(a(bb, hh), bt(bb, hh).t(), beta, alpha);
    }
  }
}

// Attention probabilities of one block, [m, b * h, kj], before dropout.
Tensor block_probabilities(const BlockInputs& in, const BlockwiseConfig& c, const Block& blk) {
  const int64_t b = in.b(), h = in.heads(), rep = in.rep(), m = blk.rows();
  auto s = torch::empty({m, b * h, blk.keys()}, in.q.options());
  per_head_matmul(
      s, b, h,
      [&](int64_t bb, int64_t hh) { return in.q[bb].slice(0, blk.i0, blk.i1).select(1, hh); },
      [&](int64_t bb, int64_t hh) { return in.k[bb].slice(0, blk.j0, blk.j1).select(1, hh / rep); },
      0.0, c.attn_scale);
  if (c.causal) {
    // Columns j > i are hidden; only columns from i0 + 1 on can be.
    const int64_t c0 = std::max(blk.i0 + 1, blk.j0);
    if (c0 < blk.j1) {
      auto opts = torch::TensorOptions().dtype(torch::kLong).device(s.device());
      auto hide = torch::arange(c0, blk.j1, opts).unsqueeze(0) >
                  torch::arange(blk.i0, blk.i1, opts).unsqueeze(1);  // [m, j1 - c0]
      s.narrow(-1, c0 - blk.j0, blk.j1 - c0).masked_fill_(hide.unsqueeze(1), kNegInf);
    }
  }
  if (in.mask.defined()) {
    auto hide = in.mask.slice(0, blk.i0, blk.i1).slice(1, blk.j0, blk.j1).logical_not();
    s.masked_fill_(hide.unsqueeze(1), kNegInf);
  }
  return torch::softmax(s, -1);
}

// Relation logits of one block, rel_scale * <qrel_il, krel_jl>: [m, b * R, kj].
Tensor block_relation_logits(const BlockInputs& in, const BlockwiseConfig& c, const Block& blk) {
  const int64_t b = in.b(), R = in.relations();
  auto t = torch::empty({blk.rows(), b * R, blk.keys()}, in.q.options());
  per_head_matmul(
      t, b, R,
      [&](int64_t bb, int64_t l) { return in.q_rel[bb].slice(0, blk.i0, blk.i1).select(1, l); },
      [&](int64_t bb, int64_t l) { return in.k_rel[bb].slice(0, blk.j0, blk.j1).select(1, l); },
      0.0, c.rel_scale);
  return t;
}

// The gradients of one block's logits scale * <q_i, k_j> (d_logits [m, b * heads, kj]; query head
// hh reads key head hh / rep): written into the block's query rows of dq (a block owns its rows),
// added into its key rows of dk (every block that reads a key adds to it).
void add_logit_grads(const Tensor& d_logits, const Tensor& q, const Tensor& k, const Block& blk,
                     int64_t heads, int64_t rep, double scale, const Tensor& dq, const Tensor& dk) {
  for (int64_t bb = 0; bb < d_logits.size(1) / heads; ++bb) {
    for (int64_t hh = 0; hh < heads; ++hh) {
      auto d = d_logits.select(1, bb * heads + hh);  // [m, kj]
      dq[bb]
          .slice(0, blk.i0, blk.i1)
          .select(1, hh)
          .addmm_(d, k[bb].slice(0, blk.j0, blk.j1).select(1, hh / rep), 0.0, scale);
      dk[bb]
          .slice(0, blk.j0, blk.j1)
          .select(1, hh / rep)
          .addmm_(d.t(), q[bb].slice(0, blk.i0, blk.i1).select(1, hh), 1.0, scale);
    }
  }
}

// The dropout multiplier of one block (0 or 1 / (1 - p)), drawn from a generator seeded per block
// so that backward draws the same mask again.
Tensor dropout_keep_mask(const Tensor& like, const BlockwiseConfig& c, const Block& blk) {
  const uint64_t seed = static_cast<uint64_t>(c.seed) + static_cast<uint64_t>(blk.index);
  at::Generator gen;
  if (like.device().is_cpu()) {
    gen = at::detail::createCPUGenerator(seed);
  } else {
    at::Generator global = at::globalContext().defaultGenerator(like.device());
    {
      std::lock_guard<std::mutex> lock(global.mutex());
      gen = global.clone();
    }
    gen.set_current_seed(seed);
  }
  // Kept entries are scaled by 1 / (1 - p), as nn.Dropout does; with p = 1 nothing is kept.
  const double scale = c.dropout < 1.0 ? 1.0 / (1.0 - c.dropout) : 0.0;
  return torch::empty_like(like).bernoulli_(1.0 - c.dropout, gen).mul_(scale);
}

// Per-thread accumulators of a gradient that several blocks add to (the keys' side), summed at the
// end, so that blocks on different threads never add to one tensor.
class ThreadSums {
 public:
  ThreadSums(const Tensor& like, bool wanted) : like_(like) {
    if (wanted) parts_.resize(at::get_num_threads());
  }
  Tensor& operator[](int thread) {
    auto& part = parts_.at(thread);
    if (!part.defined()) part = torch::zeros_like(like_);
    return part;
  }
  Tensor sum() const {
    if (parts_.empty()) return {};
    Tensor total;
    for (const auto& part : parts_) {
      if (part.defined()) total = total.defined() ? total.add_(part) : part;
    }
    return total.defined() ? total : torch::zeros_like(like_);
  }

 private:
  Tensor like_;
  std::vector<Tensor> parts_;
};

// The kernel of dual_attention::relational_attention_blockwise_forward on every backend (device
// generic: the blocks are ATen operators). Inputs as in BlockInputs, v or symbols given. Three
// outputs, row-major ([n, b * h, ...]):
//   0: sum_j p_ij v_j            [n, b * h, head_dim]  (v given; else empty)
//   1: sum_j p_ij symbols_ij     [n, b * h, d]         (relative symbols; else empty)
//   2: sum_j p_ij r_ijl          [n, b * h, R]
// with p the (dropped-out) attention probabilities and r the activated relations.
std::tuple<Tensor, Tensor, Tensor> blockwise_forward(
    const Tensor& q, const Tensor& k, const std::optional<Tensor>& v,
    const std::optional<Tensor>& symbols, const Tensor& q_rel, const Tensor& k_rel,
    const std::optional<Tensor>& mask, bool is_causal, double attn_scale, double rel_scale,
    std::string_view rel_activation, double dropout_p, int64_t seed, int64_t block_size) {
  const BlockwiseConfig c =
      config(is_causal, attn_scale, rel_scale, rel_activation, dropout_p, seed, block_size);
  BlockInputs in{q,     k,     value_or_undefined(v),   value_or_undefined(symbols),
                 q_rel, k_rel, value_or_undefined(mask)};
  const int64_t b = in.b(), n = in.n(), h = in.heads(), rep = in.rep(), R = in.relations();
  const int64_t bh = b * h;
  // Outputs not asked for are empty (numel 0).
  auto make = [&](bool wanted, at::IntArrayRef shape) {
    return torch::empty(wanted ? shape : at::IntArrayRef{0}, q.options());
  };
  auto out_v = make(in.v.defined(), {n, bh, in.v.defined() ? in.v.size(3) : 0});
  auto out_s = make(in.symbols.defined(), {n, bh, in.symbols.defined() ? in.symbols.size(2) : 0});
  auto out_r = make(true, {n, bh, R});
  const auto activation = get_activation(c.rel_activation).forward;
  const int64_t row_width = bh + b * R + (in.symbols.defined() ? in.symbols.size(2) : 0);

  for_each_block(make_blocks(n, row_width, c, in.mask), q, [&](const Block& blk, int) {
    const int64_t m = blk.rows();
    auto p = block_probabilities(in, c, blk);  // [m, b * h, kj]
    if (c.dropout > 0) p.mul_(dropout_keep_mask(p, c, blk));
    if (in.v.defined()) {  // sum_j p_ij s_j W_s
      per_head_matmul(
          out_v.slice(0, blk.i0, blk.i1), b, h,
          [&](int64_t bb, int64_t hh) { return p.select(1, bb * h + hh); },
          [&](int64_t bb, int64_t hh) {
            return in.v[bb].slice(0, blk.j0, blk.j1).select(1, hh / rep).t();
          },
          0.0, 1.0);
    }
    if (in.symbols.defined()) {                                               // sum_j p_ij s_ij
      auto s = in.symbols.slice(0, blk.i0, blk.i1).slice(1, blk.j0, blk.j1);  // [m, kj, d]
      out_s.slice(0, blk.i0, blk.i1).copy_(torch::bmm(p, s));
    }
    // sum_j p_ij r_ijl, one [h, kj] x [kj, R] product per query row
    auto r = activation(block_relation_logits(in, c, blk)).view({m * b, R, -1});
    out_r.slice(0, blk.i0, blk.i1)
        .view({m * b, h, R})
        .copy_(torch::bmm(p.view({m * b, h, -1}), r.transpose(1, 2)));
  });

  return {out_v, out_s, out_r};
}

// With p = softmax(s) and the outputs O = sum_j p_ij V_ij (each output above is one),
//   dp_ij = sum over outputs of <dO_i, V_ij>,  ds_ij = p_ij (dp_ij - D_i),
//   D_i = sum_j p_ij dp_ij = sum over outputs of <dO_i, O_i>   (an O(n) quantity),
// and each block's p is recomputed from q and k. With dropout, p_ij dp_ij = pd_ij dpd_ij for the
// dropped-out pd = p * keep and its gradient dpd, so D is the same sum.
// The kernel of dual_attention::relational_attention_blockwise_backward: (dq, dk, dv, d_symbols,
// dq_rel, dk_rel), dv and d_symbols empty unless want_v and want_symbols.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> blockwise_backward(
    const std::optional<Tensor>& grad_out_v, const std::optional<Tensor>& grad_out_s,
    const std::optional<Tensor>& grad_out_r, const Tensor& q, const Tensor& k,
    const std::optional<Tensor>& v, const std::optional<Tensor>& symbols, const Tensor& q_rel,
    const Tensor& k_rel, const std::optional<Tensor>& mask, const Tensor& out_v,
    const Tensor& out_s, const Tensor& out_r, bool is_causal, double attn_scale, double rel_scale,
    std::string_view rel_activation, double dropout_p, int64_t seed, int64_t block_size,
    bool want_v, bool want_symbols) {
  const BlockwiseConfig c =
      config(is_causal, attn_scale, rel_scale, rel_activation, dropout_p, seed, block_size);
  BlockInputs in{q,     k,     value_or_undefined(v),   value_or_undefined(symbols),
                 q_rel, k_rel, value_or_undefined(mask)};
  // An output that nothing used has no gradient: zeros.
  auto grad_of = [](const std::optional<Tensor>& grad, const Tensor& out) {
    return grad && grad->defined() ? grad->contiguous() : torch::zeros_like(out);
  };
  const auto d_out_v = grad_of(grad_out_v, out_v), d_out_s = grad_of(grad_out_s, out_s);
  const auto d_out_r = grad_of(grad_out_r, out_r);
  const int64_t b = in.b(), n = in.n(), h = in.heads(), rep = in.rep(), R = in.relations();

  auto delta = (d_out_r * out_r).sum(-1);  // D [n, b * h]
  if (in.v.defined()) delta += (d_out_v * out_v).sum(-1);
  if (in.symbols.defined()) delta += (d_out_s * out_s).sum(-1);

  // A block writes its own query rows; the key side collects from every block.
  auto dq = torch::zeros_like(in.q), dq_rel = torch::zeros_like(in.q_rel);
  auto d_symbols = want_symbols ? torch::zeros_like(in.symbols) : Tensor();
  ThreadSums dk(in.k, true), dk_rel(in.k_rel, true), dv(in.v, want_v);
  const auto& activation = get_activation(c.rel_activation);
  const int64_t row_width = b * h + b * R + (in.symbols.defined() ? in.symbols.size(2) : 0);

  for_each_block(make_blocks(n, row_width, c, in.mask), in.q, [&](const Block& blk, int thread) {
    const int64_t m = blk.rows();
    auto head = [&](const Tensor& t) {  // [m, b * h, x] -> (bb, hh) -> [m, x]
      return [&t, h](int64_t bb, int64_t hh) { return t.select(1, bb * h + hh); };
    };
    auto keys = [&](const Tensor& t, int64_t per) {  // [b, n, w, x] keys of this block
      return [&t, &blk, per](int64_t bb, int64_t hh) {
        return t[bb].slice(0, blk.j0, blk.j1).select(1, hh / per);
      };
    };
    auto p = block_probabilities(in, c, blk);  // [m, b * h, kj]
    Tensor keep = c.dropout > 0 ? dropout_keep_mask(p, c, blk) : Tensor();
    auto pd = keep.defined() ? p * keep : p;

    // dpd: the gradient of the dropped-out probabilities, a term per output.
    auto d_o_v = d_out_v.slice(0, blk.i0, blk.i1), d_o_r = d_out_r.slice(0, blk.i0, blk.i1);
    auto dpd = torch::empty_like(p);
    if (in.v.defined()) {
      per_head_matmul(dpd, b, h, head(d_o_v), keys(in.v, rep), 0.0, 1.0);
      if (want_v) {
        for (int64_t bb = 0; bb < b; ++bb) {
          for (int64_t hh = 0; hh < h; ++hh) {
            dv[thread][bb]
                .slice(0, blk.j0, blk.j1)
                .select(1, hh / rep)
                .addmm_(pd.select(1, bb * h + hh).t(), d_o_v.select(1, bb * h + hh));
          }
        }
      }
    } else {
      dpd.zero_();
    }
    if (in.symbols.defined()) {
      auto s = in.symbols.slice(0, blk.i0, blk.i1).slice(1, blk.j0, blk.j1);  // [m, kj, d]
      auto d_o = d_out_s.slice(0, blk.i0, blk.i1);                            // [m, b*h, d]
      dpd.baddbmm_(d_o, s.transpose(1, 2));
      if (want_symbols) {
        d_symbols.slice(0, blk.i0, blk.i1)
            .slice(1, blk.j0, blk.j1)
            .copy_(torch::bmm(pd.transpose(1, 2), d_o));
      }
    }
    {
      auto t = block_relation_logits(in, c, blk).view({m * b, R, -1});
      auto r = activation.forward(t);  // [m * b, R, kj]
      if (!activation.needs_input) t.reset();
      auto d_o = d_o_r.view({m * b, h, R});
      dpd.view({m * b, h, -1}).baddbmm_(d_o, r);
      auto dr = torch::bmm(d_o.transpose(1, 2), pd.view({m * b, h, -1}));  // [m * b, R, kj]
      auto dt = activation.backward(dr, t, r).view({m, b * R, -1});
      t.reset(), r.reset(), dr.reset();
      add_logit_grads(dt, in.q_rel, in.k_rel, blk, R, 1, c.rel_scale, dq_rel, dk_rel[thread]);
    }
    pd.reset();
    if (keep.defined()) dpd.mul_(keep);
    auto ds = dpd.sub_(delta.slice(0, blk.i0, blk.i1).unsqueeze(-1)).mul_(p);  // [m, b*h, kj]
    p.reset();
    add_logit_grads(ds, in.q, in.k, blk, h, rep, c.attn_scale, dq, dk[thread]);
  });
  // Gradients not asked for are empty tensors (an operator returns no undefined tensor).
  auto or_empty = [&](const Tensor& t) { return t.defined() ? t : q.new_empty({0}); };
  return {dq, dk.sum(), or_empty(dv.sum()), or_empty(d_symbols), dq_rel, dk_rel.sum()};
}

// The meta kernels (shapes only): what torch.compile and torch.export trace the operators with.
std::tuple<Tensor, Tensor, Tensor> blockwise_forward_meta(const Tensor& q, const Tensor&,
                                                          const std::optional<Tensor>& v,
                                                          const std::optional<Tensor>& symbols,
                                                          const Tensor& q_rel, const Tensor&,
                                                          const std::optional<Tensor>&, bool,
                                                          double, double, std::string_view, double,
                                                          int64_t, int64_t) {
  const int64_t n = q.size(1), bh = q.size(0) * q.size(2);
  auto width = [](const std::optional<Tensor>& t, int64_t dim) {
    return t && t->defined() ? t->size(dim) : int64_t{0};
  };
  auto empty = [&](int64_t w) { return w > 0 ? q.new_empty({n, bh, w}) : q.new_empty({0}); };
  return {empty(width(v, 3)), empty(width(symbols, 2)), q.new_empty({n, bh, q_rel.size(2)})};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> blockwise_backward_meta(
    const std::optional<Tensor>&, const std::optional<Tensor>&, const std::optional<Tensor>&,
    const Tensor& q, const Tensor& k, const std::optional<Tensor>& v,
    const std::optional<Tensor>& symbols, const Tensor& q_rel, const Tensor& k_rel,
    const std::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&, bool, double, double,
    std::string_view, double, int64_t, int64_t, bool want_v, bool want_symbols) {
  auto like_if = [&](bool wanted, const std::optional<Tensor>& t) {
    return wanted && t && t->defined() ? torch::empty_like(*t) : q.new_empty({0});
  };
  return {torch::empty_like(q),           torch::empty_like(k),     like_if(want_v, v),
          like_if(want_symbols, symbols), torch::empty_like(q_rel), torch::empty_like(k_rel)};
}

using ForwardOp = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                     const std::optional<Tensor>&,
                                                     const std::optional<Tensor>&, const Tensor&,
                                                     const Tensor&, const std::optional<Tensor>&,
                                                     bool, double, double, std::string_view, double,
                                                     int64_t, int64_t);
using BackwardOp = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const std::optional<Tensor>&, const std::optional<Tensor>&, const std::optional<Tensor>&,
    const Tensor&, const Tensor&, const std::optional<Tensor>&, const std::optional<Tensor>&,
    const Tensor&, const Tensor&, const std::optional<Tensor>&, const Tensor&, const Tensor&,
    const Tensor&, bool, double, double, std::string_view, double, int64_t, int64_t, bool, bool);

const c10::TypedOperatorHandle<ForwardOp>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("dual_attention::relational_attention_blockwise_forward", "")
          .typed<ForwardOp>();
  return op;
}
const c10::TypedOperatorHandle<BackwardOp>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("dual_attention::relational_attention_blockwise_backward", "")
          .typed<BackwardOp>();
  return op;
}

std::optional<Tensor> optional_of(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

// The forward operator as one autograd node whose backward is the backward operator. It saves the
// O(n) inputs and outputs only: the backward recomputes each block, as flash attention does.
struct BlockwiseRelationalAttention
    : public torch::autograd::Function<BlockwiseRelationalAttention> {
  static variable_list forward(AutogradContext* ctx, const Tensor& q, const Tensor& k,
                               const std::optional<Tensor>& v, const std::optional<Tensor>& symbols,
                               const Tensor& q_rel, const Tensor& k_rel,
                               const std::optional<Tensor>& mask, bool is_causal, double attn_scale,
                               double rel_scale, std::string_view rel_activation, double dropout_p,
                               int64_t seed, int64_t block_size) {
    Tensor out_v, out_s, out_r;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(out_v, out_s, out_r) =
          forward_op().call(q, k, v, symbols, q_rel, k_rel, mask, is_causal, attn_scale, rel_scale,
                            rel_activation, dropout_p, seed, block_size);
    }
    ctx->saved_data["is_causal"] = is_causal;
    ctx->saved_data["attn_scale"] = attn_scale;
    ctx->saved_data["rel_scale"] = rel_scale;
    ctx->saved_data["rel_activation"] = std::string(rel_activation);
    ctx->saved_data["dropout_p"] = dropout_p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["block_size"] = block_size;
    ctx->saved_data["want_v"] = v && v->defined() && v->requires_grad();
    ctx->saved_data["want_symbols"] = symbols && symbols->defined() && symbols->requires_grad();
    ctx->save_for_backward({q, k, value_or_undefined(v), value_or_undefined(symbols), q_rel, k_rel,
                            value_or_undefined(mask), out_v, out_s, out_r});
    // Outputs not asked for are empty and non-differentiable.
    variable_list unused;
    if (!(v && v->defined())) unused.push_back(out_v);
    if (!(symbols && symbols->defined())) unused.push_back(out_s);
    ctx->mark_non_differentiable(unused);
    return {out_v, out_s, out_r};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool want_v = ctx->saved_data["want_v"].toBool();
    const bool want_symbols = ctx->saved_data["want_symbols"].toBool();
    auto [dq, dk, dv, d_symbols, dq_rel, dk_rel] = backward_op().call(
        optional_of(grads[0]), optional_of(grads[1]), optional_of(grads[2]), saved[0], saved[1],
        optional_of(saved[2]), optional_of(saved[3]), saved[4], saved[5], optional_of(saved[6]),
        saved[7], saved[8], saved[9], ctx->saved_data["is_causal"].toBool(),
        ctx->saved_data["attn_scale"].toDouble(), ctx->saved_data["rel_scale"].toDouble(),
        ctx->saved_data["rel_activation"].toStringRef(), ctx->saved_data["dropout_p"].toDouble(),
        ctx->saved_data["seed"].toInt(), ctx->saved_data["block_size"].toInt(), want_v,
        want_symbols);
    return {dq,
            dk,
            want_v ? dv : Tensor(),
            want_symbols ? d_symbols : Tensor(),
            dq_rel,
            dk_rel,
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor()};
  }
};

// The backward operator's autograd node, created only when its gradients are differentiated
// (create_graph=True): it has no derivative of its own, and says so when asked for one.
struct BlockwiseBackwardHasNoGradient
    : public torch::autograd::Function<BlockwiseBackwardHasNoGradient> {
  static variable_list forward(AutogradContext*, at::TensorList differentiable_inputs,
                               const std::function<variable_list()>& compute) {
    (void)differentiable_inputs;  // what the node's outputs depend on, for autograd
    return compute();
  }
  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "relational_attention: the blockwise implementation has no second derivative; "
                "use implementation='materialize' for double backward");
  }
};

// The Autograd kernels of the two operators.
std::tuple<Tensor, Tensor, Tensor> blockwise_forward_autograd(
    const Tensor& q, const Tensor& k, const std::optional<Tensor>& v,
    const std::optional<Tensor>& symbols, const Tensor& q_rel, const Tensor& k_rel,
    const std::optional<Tensor>& mask, bool is_causal, double attn_scale, double rel_scale,
    std::string_view rel_activation, double dropout_p, int64_t seed, int64_t block_size) {
  auto outs = BlockwiseRelationalAttention::apply(q, k, v, symbols, q_rel, k_rel, mask, is_causal,
                                                  attn_scale, rel_scale, rel_activation, dropout_p,
                                                  seed, block_size);
  return {outs[0], outs[1], outs[2]};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> blockwise_backward_autograd(
    const std::optional<Tensor>& grad_out_v, const std::optional<Tensor>& grad_out_s,
    const std::optional<Tensor>& grad_out_r, const Tensor& q, const Tensor& k,
    const std::optional<Tensor>& v, const std::optional<Tensor>& symbols, const Tensor& q_rel,
    const Tensor& k_rel, const std::optional<Tensor>& mask, const Tensor& out_v,
    const Tensor& out_s, const Tensor& out_r, bool is_causal, double attn_scale, double rel_scale,
    std::string_view rel_activation, double dropout_p, int64_t seed, int64_t block_size,
    bool want_v, bool want_symbols) {
  auto compute = [&]() -> variable_list {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [dq, dk, dv, d_symbols, dq_rel, dk_rel] =
        backward_op().call(grad_out_v, grad_out_s, grad_out_r, q, k, v, symbols, q_rel, k_rel, mask,
                           out_v, out_s, out_r, is_causal, attn_scale, rel_scale, rel_activation,
                           dropout_p, seed, block_size, want_v, want_symbols);
    return {dq, dk, dv, d_symbols, dq_rel, dk_rel};
  };
  variable_list outs;
  if (torch::autograd::GradMode::is_enabled()) {
    variable_list differentiable;
    for (const auto& t :
         {grad_out_v, grad_out_s, grad_out_r, std::optional<Tensor>(q), std::optional<Tensor>(k), v,
          symbols, std::optional<Tensor>(q_rel), std::optional<Tensor>(k_rel)}) {
      if (t && t->defined()) differentiable.push_back(*t);
    }
    outs = BlockwiseBackwardHasNoGradient::apply(at::TensorList(differentiable), compute);
  } else {
    outs = compute();
  }
  return {outs[0], outs[1], outs[2], outs[3], outs[4], outs[5]};
}

int64_t draw_seed() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return static_cast<int64_t>(gen.get<at::CPUGeneratorImpl>()->random64() >> 1);
}

}  // namespace

torch::Tensor ops::relational_attention_blockwise(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& q_rel,
    const torch::Tensor& k_rel, const torch::Tensor& sv, const torch::Tensor& wr,
    const torch::Tensor& attn_mask, bool is_causal, bool relative_symbols,
    const std::string& rel_activation, double dropout_p, int64_t block_size) {
  const int64_t b = q.size(0), n = q.size(1), h = q.size(2), g = sv.size(2), hd = sv.size(3);
  // Relative symbols enter as one [n, n, g * head_dim] tensor that every head attends; each head
  // then keeps its group's columns.
  std::optional<Tensor> v, relative, mask;
  if (relative_symbols) {
    relative = sv.reshape({n, n, g * hd});
  } else {
    v = sv;
  }
  if (attn_mask.defined()) mask = attn_mask.to(q.device());

  const double attn_scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const double rel_scale = 1.0 / std::sqrt(static_cast<double>(q_rel.size(3)));
  // A trace would make the seed a constant of its graph: the same dropout masks at every call.
  TORCH_CHECK(dropout_p == 0 || !is_traced(q),
              "relational_attention: the blockwise implementation cannot be traced with dropout "
              "(dropout_p = ",
              dropout_p,
              "): its seed would be a constant of the graph; use implementation='auto' "
              "or 'materialize', or dropout_p = 0");
  const int64_t seed = dropout_p > 0 ? draw_seed() : 0;
  auto [out_v, out_s, out_r] = forward_op().call(
      q.contiguous(), k.contiguous(), v, relative, q_rel.contiguous(), k_rel.contiguous(), mask,
      is_causal, attn_scale, rel_scale, rel_activation, dropout_p, seed, block_size);

  auto by_head = [&](const Tensor& t) {  // [n, b * h, w] -> [b, n, h, w]
    return t.view({n, b, h, t.size(2)}).transpose(0, 1);
  };
  Tensor symbol_part;  // [b, n, h, hd]
  if (!relative_symbols) {
    symbol_part = by_head(out_v);
  } else {
    // [b, n, (g, rep), (g', hd)]: query head (gg, r) keeps the columns of group g' = gg.
    auto all_groups = by_head(out_s).reshape({b, n, g, h / g, g, hd});
    symbol_part = all_groups
                      .diagonal(0, 2, 4)         // [b, n, rep, hd, g]
                      .permute({0, 1, 4, 2, 3})  // [b, n, g, rep, hd]
                      .reshape({b, n, h, hd});
  }
  auto attended_relations = by_head(out_r);  // [b, n, h, R]
  return symbol_part + torch::einsum("bnhr,hdr->bnhd", {attended_relations, wr});
}

torch::Tensor ops::relational_attention_sdpa(const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& q_rel, const torch::Tensor& k_rel,
                                             const torch::Tensor& sv, const torch::Tensor& wr,
                                             const torch::Tensor& attn_mask, bool is_causal,
                                             bool relative_symbols,
                                             const std::string& rel_activation, double dropout_p) {
  TORCH_CHECK(rel_activation == "identity" && !relative_symbols,
              "relational_attention: the SDPA implementation needs rel_activation 'identity' and "
              "per-position symbols, got rel_activation '",
              rel_activation, "' and relative_symbols=", relative_symbols);
  const int64_t b = q.size(0), n = q.size(1), h = q.size(2), key_dim = q.size(3), m = k.size(1);
  const int64_t n_rep = h / k.size(2), head_dim = sv.size(3), R = q_rel.size(2), dr = q_rel.size(3);
  const auto device = q.device();
  auto values =
      torch::cat({repeat_kv(sv, n_rep), k_rel.reshape({b, m, 1, R * dr}).expand({-1, -1, h, -1})},
                 -1);  // [b, m, h, dv]
  const int64_t dv = values.size(-1);
  auto qt = q.transpose(1, 2), kt = repeat_kv(k, n_rep).transpose(1, 2);
  values = values.transpose(1, 2);
  if (device.is_cpu() && key_dim != dv) {
    // The CPU's fused kernel wants one width for queries, keys and values; zero columns leave the
    // scores unchanged (the scale is explicit).
    qt = torch::constant_pad_nd(qt, {0, dv - key_dim});
    kt = torch::constant_pad_nd(kt, {0, dv - key_dim});
  }
  std::optional<Tensor> mask;
  if (attn_mask.defined()) mask = attn_mask.to(device);
  const double attn_scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  auto attended =
      at::scaled_dot_product_attention(qt, kt, values, mask, dropout_p, is_causal, attn_scale)
          .transpose(1, 2);  // [b, n, h, dv]
  auto symbol_part = attended.narrow(-1, 0, head_dim);
  // sum_j a_ij r_ijl = rel_scale * <qrel_il, sum_j a_ij krel_jl>
  auto attended_keys = attended.narrow(-1, head_dim, R * dr).reshape({b, n, h, R, dr});
  const double rel_scale = 1.0 / std::sqrt(static_cast<double>(dr));
  auto attended_relations = (attended_keys * q_rel.unsqueeze(2)).sum(-1) * rel_scale;
  return symbol_part + torch::einsum("bnhr,hdr->bnhd", {attended_relations, wr});
}

}  // namespace dual_attention

// The blockwise path's two operators (declared in src/ops.cpp): the kernels, device generic; their
// meta kernels, for tracing; and the Autograd kernel that joins them into one differentiable
// operator, so that torch.compile and torch.export keep the path whole instead of tracing its
// blocks.
TORCH_LIBRARY_IMPL(dual_attention, CompositeExplicitAutograd, m) {
  m.impl("relational_attention_blockwise_forward", &dual_attention::blockwise_forward);
  m.impl("relational_attention_blockwise_backward", &dual_attention::blockwise_backward);
}
TORCH_LIBRARY_IMPL(dual_attention, Meta, m) {
  m.impl("relational_attention_blockwise_forward", &dual_attention::blockwise_forward_meta);
  m.impl("relational_attention_blockwise_backward", &dual_attention::blockwise_backward_meta);
}
TORCH_LIBRARY_IMPL(dual_attention, Autograd, m) {
  m.impl("relational_attention_blockwise_forward", &dual_attention::blockwise_forward_autograd);
  m.impl("relational_attention_blockwise_backward", &dual_attention::blockwise_backward_autograd);
}
