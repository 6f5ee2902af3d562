#include "views.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace dual_attention::app {
namespace assets {
extern const unsigned char page_html[];
extern const unsigned char page_css[];
extern const unsigned char page_js[];
}  // namespace assets

namespace {

using json = nlohmann::json;

std::string asset(const unsigned char* text) { return reinterpret_cast<const char*>(text); }

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// JSON as a JavaScript expression inside <script>: every '<' (only ever inside strings) becomes
// \u003c, so that no "</script>" or "<!--" in a token can end the script.
std::string script_json(const json& value) {
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
  replace_all(text, "<", "\\u003c");
  return text;
}

// RFC 4648 base64 (the page decodes it with atob).
std::string base64(const std::vector<uint8_t>& data) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    const uint32_t v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    for (int shift : {18, 12, 6, 0}) out += alphabet[(v >> shift) & 63];
  }
  if (i < data.size()) {
    const uint32_t v = (data[i] << 16) | (i + 1 < data.size() ? data[i + 1] << 8 : 0);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < data.size() ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// zlib's deflate (the zlib format, which the browser's DecompressionStream("deflate") reads).
std::vector<uint8_t> deflate(const std::vector<uint8_t>& data) {
  uLongf size = compressBound(data.size());
  std::vector<uint8_t> out(size);
  const int status = compress2(out.data(), &size, data.data(), data.size(), Z_DEFAULT_COMPRESSION);
  if (status != Z_OK)
    throw std::runtime_error("deflate failed (zlib status " + std::to_string(status) + ")");
  out.resize(size);
  return out;
}

// Appends the quantisation of m ([n, n]; its lower triangle when triangular) to `levels` levels
// (one byte each) to blob and returns [offset, lo, hi]: value = lo + q * (hi - lo) / (levels - 1).
json append_matrix(std::vector<uint8_t>& blob, const torch::Tensor& m, bool triangular,
                   int64_t levels) {
  auto values = m.to(torch::kFloat).contiguous();
  if (triangular) values = values.masked_select(torch::ones_like(values, torch::kBool).tril());
  values = values.flatten();
  const double lo = values.min().item<double>(), hi = values.max().item<double>();
  const double step = hi > lo ? (hi - lo) / static_cast<double>(levels - 1) : 1.0;
  auto q = ((values - lo) / step).round().clamp(0, levels - 1).to(torch::kUInt8).contiguous();
  json entry = {blob.size(), lo, hi};
  const auto* p = q.data_ptr<uint8_t>();
  blob.insert(blob.end(), p, p + q.numel());
  return entry;
}

}  // namespace

VisualizationInput visualization_input(const IntermediateResults& results, int64_t batch,
                                       bool relations_last) {
  VisualizationInput input;
  auto take = [&](const char* key, std::vector<torch::Tensor>& out, bool relations) {
    auto it = results.find(key);
    if (it == results.end()) return;
    for (const auto& t : it->second) {
      if (!t.defined()) {
        out.emplace_back();
        continue;
      }
      TORCH_CHECK(batch >= 0 && batch < t.size(0), "visualization_input: batch ", batch,
                  " is out of range for ", key, " of batch size ", t.size(0));
      auto entry = t.select(0, batch).detach().to(torch::kCPU, torch::kFloat);
      out.push_back(relations && relations_last ? entry.permute({2, 0, 1}) : entry);
    }
  };
  take(results.count("attn_scores") ? "attn_scores" : "sa_attn_scores", input.sa, false);
  take("ra_attn_scores", input.ra, false);
  take("ra_rels", input.rel, true);
  take("symbol_attn_scores", input.symbols, false);
  return input;
}

json visualization_payload(const VisualizationInput& input, const PayloadOptions& options) {
  const auto n = static_cast<int64_t>(input.tokens.size());
  const size_t n_layers = std::max({input.sa.size(), input.ra.size(), input.rel.size()});
  std::vector<uint8_t> blob;
  json matrices = json::object(), heads = json::object(), levels = json::object();
  auto add_kind = [&](const char* kind, const std::vector<torch::Tensor>& per_layer,
                      int64_t kind_levels) {
    json layers = json::array();
    int64_t count = 0;
    for (size_t l = 0; l < n_layers; ++l) {
      json entries = json::array();
      if (l < per_layer.size() && per_layer[l].defined()) {
        const auto& t = per_layer[l];
        TORCH_CHECK(t.dim() == 3 && t.size(1) == n && t.size(2) == n,
                    "visualization_payload: ", kind, " of layer ", l, " must be [heads, ", n, ", ",
                    n, "] (one row per token), got ", t.sizes());
        count = t.size(0);
        for (int64_t h = 0; h < t.size(0); ++h)
          entries.push_back(append_matrix(blob, t[h], input.causal, kind_levels));
      }
      layers.push_back(entries);
    }
    matrices[kind] = layers;
    heads[kind] = count;
    levels[kind] = kind_levels;
  };
  TORCH_CHECK(options.attention_levels >= 2 && options.attention_levels <= 256 &&
                  options.relation_levels >= 0 && options.relation_levels <= 256 &&
                  options.relation_levels != 1,
              "visualization_payload: levels must be in [2, 256] (relation_levels 0: automatic), "
              "got attention_levels ",
              options.attention_levels, ", relation_levels ", options.relation_levels);
  int64_t relation_levels = options.relation_levels;
  if (relation_levels == 0) {
    int64_t values = 0;
    for (const auto& t : input.rel)
      if (t.defined()) values += t.size(0) * (input.causal ? n * (n + 1) / 2 : n * n);
    relation_levels = values <= options.full_precision_relations ? 256 : 64;
  }
  add_kind("sa", input.sa, options.attention_levels);
  add_kind("ra", input.ra, options.attention_levels);
  add_kind("rel", input.rel, relation_levels);

  // Symbols: per layer, head and token, the top-k symbol ids (uint16, little-endian) and weights
  // (uint8, weight * 255).
  json symbols = nullptr;
  const bool any_symbols = std::any_of(input.symbols.begin(), input.symbols.end(),
                                       [](const torch::Tensor& t) { return t.defined(); });
  if (any_symbols && options.top_symbols > 0) {
    json layers = json::array();
    int64_t n_heads = 0, n_symbols = 0, k = 0;
    for (const auto& t : input.symbols) {
      if (!t.defined()) {
        layers.push_back(nullptr);
        continue;
      }
      TORCH_CHECK(t.dim() == 3 && t.size(1) == n, "visualization_payload: symbol weights must be ",
                  "[heads, ", n, ", n_symbols], got ", t.sizes());
      TORCH_CHECK(t.size(2) <= 65536, "visualization_payload: at most 65536 symbols, got ",
                  t.size(2));
      n_heads = t.size(0);
      n_symbols = t.size(2);
      k = std::min(options.top_symbols, n_symbols);
      auto [values, ids] = torch::topk(t.to(torch::kFloat), k, -1);  // [heads, n, k]
      auto q = (values * 255).round().clamp(0, 255).to(torch::kUInt8).contiguous();
      auto id = ids.to(torch::kInt32).contiguous();
      layers.push_back(blob.size());
      const auto* qp = q.data_ptr<uint8_t>();
      const auto* ip = id.data_ptr<int32_t>();
      for (int64_t e = 0; e < q.numel(); ++e) {
        blob.push_back(static_cast<uint8_t>(ip[e] & 0xff));
        blob.push_back(static_cast<uint8_t>((ip[e] >> 8) & 0xff));
        blob.push_back(qp[e]);
      }
    }
    symbols = {{"k", k}, {"n_heads", n_heads}, {"n_symbols", n_symbols}, {"layers", layers}};
  }

  const std::vector<uint8_t> data = options.compress ? deflate(blob) : blob;
  return {{"format", "dual-attention-viz/1"},
          {"model", input.model},
          {"model_class", input.model_class},
          {"tokens", input.tokens},
          {"n_prompt", input.n_prompt},
          {"n_layers", n_layers},
          {"triangular", input.causal},
          {"heads", heads},
          {"levels", levels},
          {"matrices", matrices},
          {"symbols", symbols},
          {"encoding", options.compress ? "deflate" : "raw"},
          {"raw_bytes", blob.size()},
          {"blob", base64(data)}};
}

namespace {

std::string page(const std::string& title, const std::string& payload, const std::string& app) {
  std::string html = asset(assets::page_html);
  // The title has no '@' left (escaped), the CSS and script hold no placeholder: each placeholder
  // is found once, in the template, and the user's strings (payload, app) go in last.
  std::string escaped_title = html_escape(title);
  replace_all(escaped_title, "@", "&#64;");
  replace_all(html, "@TITLE@", escaped_title);
  replace_all(html, "/*@STYLE@*/", asset(assets::page_css));
  replace_all(html, "/*@SCRIPT@*/", asset(assets::page_js));
  html.replace(html.find("/*@APP@*/null"), 13, app);
  html.replace(html.find("/*@PAYLOAD@*/null"), 17, payload);
  return html;
}

}  // namespace

std::string visualization_html(const json& payload, const std::string& title) {
  return page(title, script_json(payload), "null");
}

std::string app_html(const json& config, const std::string& title) {
  return page(title, "null", script_json(config));
}

}  // namespace dual_attention::app
