// The views of `dual-attention viz` and `dual-attention serve`: one self-contained HTML page (its
// CSS and JavaScript inline, no CDN) that shows a language model's attention scores, relations and
// symbol assignments in a head view, a model view and a symbol-assignment view.
//
// The page reads a payload (JSON, format in docs/model_analysis.md). Its matrices are quantised
// for display: each [n, n] matrix (one head or relation of one layer) is stored as one byte per
// value with its own range, value = lo + q * (hi - lo) / (levels - 1) (an error of at most
// (hi - lo) / (2 (levels - 1))), only the lower triangle for causal models, all of it deflated and
// base64-encoded; see PayloadOptions for the levels. Symbol assignments keep the
// top-k symbols of each token and head (uint16 id, uint8 weight).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dual_attention/model_analysis.h"

namespace dual_attention::app {

// What the views show for one sequence.
struct VisualizationInput {
  std::string model;                // the name shown (folder or Hub id)
  std::string model_class;          // "DualAttnTransformerLM" or "TransformerLM"
  std::vector<std::string> tokens;  // the text of each position
  int64_t n_prompt = 0;  // positions from the prompt; the rest were generated (shown in colour)
  bool causal = true;    // only j <= i is stored and shown
  // Per layer [heads, n, n] (undefined where the layer has none): self-attention scores,
  // relational-attention scores, relations (one matrix per relation channel).
  std::vector<torch::Tensor> sa, ra, rel;
  // Per layer [heads, n, n_symbols]: the symbol retriever's attention weights, or undefined.
  std::vector<torch::Tensor> symbols;
};

// The input of the views from the intermediate results of datlm_forward_w_intermediate_results
// (or transformerlm_..., whose attn_scores become `sa`), taking batch entry `batch`.
// `relations_last`: ra_rels is [b, n, n, n_relations] ('relational_attention'); otherwise it is
// [b, heads, n, n] ('disrca').
VisualizationInput visualization_input(const IntermediateResults& results, int64_t batch,
                                       bool relations_last);

struct PayloadOptions {
  int64_t top_symbols = 4;  // symbols kept per token and head in the symbol-assignment view
  bool compress = true;     // deflate the binary data (the page inflates it natively)
  // Quantisation levels (2..256, one byte per value) of the attention scores and of the
  // relations. Relations are near-Gaussian and barely compress, attention weights compress well:
  // relation_levels 0 (automatic) keeps 256 levels while the relations hold at most
  // full_precision_relations values, and 64 above (a 24-layer model on 256 tokens then stays under
  // 10 MB).
  int64_t attention_levels = 256;
  int64_t relation_levels = 0;
  int64_t full_precision_relations = int64_t{1} << 22;
};

// The payload the page renders. Tokens must match the matrices' n.
nlohmann::json visualization_payload(const VisualizationInput& input,
                                     const PayloadOptions& options = {});

// The page showing `payload`, self-contained (opens offline from a file).
std::string visualization_html(const nlohmann::json& payload, const std::string& title);

// The page of the local web app: a generation form (POST /v1/completions, streamed) and the views
// of its visualization (POST /v1/visualize). `config` is {"model": name}.
std::string app_html(const nlohmann::json& config, const std::string& title);

}  // namespace dual_attention::app
