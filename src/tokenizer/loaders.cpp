// The three file formats, parsed from memory: tiktoken rank files, Hugging Face tokenizer.json,
// GPT-2's vocab.json + merges.txt. Every malformed input is a TokenizerError naming the source
// and the line, or the JSON path and the token.
#include <nlohmann/json.hpp>

#include "tokenizer_impl.h"

namespace dual_attention {

using detail::TokenizerImpl;
using nlohmann::json;

namespace {

// ---- tiktoken rank files ----------------------------------------------------------------------

// Strict standard base64 (RFC 4648 alphabet, '=' padding to a multiple of 4).
bool base64_decode(std::string_view in, std::string& out) {
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = int8_t(i);
    return t;
  }();
  out.clear();
  if (in.empty() || in.size() % 4 != 0) return false;
  size_t pad = 0;
  while (pad < 2 && in[in.size() - 1 - pad] == '=') ++pad;
  const size_t n = in.size() - pad;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    const int8_t v = table[static_cast<unsigned char>(in[i])];
    if (v < 0) return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xFF);
    }
  }
  return true;
}

// The lines of `contents` (without "\n" / "\r\n"), with their 1-based numbers; blank ones skipped.
template <class F>
void for_each_line(std::string_view contents, F&& f) {
  size_t line_no = 0, pos = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    if (end == std::string_view::npos) end = contents.size();
    std::string_view line = contents.substr(pos, end - pos);
    ++line_no;
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    f(line, line_no);
  }
}

std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t pos = 0;
  while (true) {
    pos = line.find_first_not_of(" \t", pos);
    if (pos == std::string_view::npos) break;
    size_t end = line.find_first_of(" \t", pos);
    if (end == std::string_view::npos) end = line.size();
    fields.push_back(line.substr(pos, end - pos));
    pos = end;
  }
  return fields;
}

std::string shown(std::string_view s, size_t max = 40) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max; ++i) out += s[i];
  if (s.size() > max) out += "...";
  return out + "'";
}

}  // namespace

// ---- byte-level alphabet (GPT-2's bytes_to_unicode) -------------------------------------------
namespace detail {
namespace {
// Byte b is written as the code point byte_to_char[b]: printable Latin-1 bytes as themselves,
// the other 68 as 256, 257, ... in byte order.
struct ByteLevel {
  std::array<uint32_t, 256> byte_to_char{};
  std::array<int16_t, 512> char_to_byte{};
  ByteLevel() {
    char_to_byte.fill(-1);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_char[b] = printable ? b : 256 + extra++;
      char_to_byte[byte_to_char[b]] = int16_t(b);
    }
  }
};
const ByteLevel& byte_level() {
  static const ByteLevel table;
  return table;
}
}  // namespace

// The bytes a byte-level token string stands for; false if a character is not in the alphabet.
bool byte_level_decode(std::string_view token, std::string& out) {
  const ByteLevel& bl = byte_level();
  out.clear();
  for (size_t i = 0; i < token.size();) {
    const auto c = static_cast<unsigned char>(token[i]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = ((c & 0x1F) << 6) | (static_cast<unsigned char>(token[i + 1]) & 0x3F);
      i += 2;
    } else {
      return false;  // every character of the alphabet is below U+0800
    }
    if (cp >= 512 || bl.char_to_byte[cp] < 0) return false;
    out += char(bl.char_to_byte[cp]);
  }
  return true;
}
}  // namespace detail

// ---- from_ranks / from_tiktoken_bpe -----------------------------------------------------------

Tokenizer Tokenizer::from_ranks(const std::vector<std::pair<std::string, int64_t>>& mergeable_ranks,
                                const std::string& pat_str,
                                const std::map<std::string, int64_t>& special_tokens,
                                const std::string& name) {
  auto impl = std::make_shared<TokenizerImpl>();
  impl->add_tokens(mergeable_ranks, [&](size_t i) {
    return i < mergeable_ranks.size() ? "mergeable_ranks: token " + shown(mergeable_ranks[i].first)
                                      : std::string("mergeable_ranks");
  });
  impl->add_rank_merges();
  impl->finish(special_tokens, pat_str, name, "tokenizer '" + name + "'");
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_tiktoken_bpe(std::string_view contents, const TokenizerOptions& options,
                                       const std::string& source) {
  std::vector<std::pair<std::string, int64_t>> tokens;
  std::vector<size_t> lines;
  tokens.reserve(contents.size() / 12);
  for_each_line(contents, [&](std::string_view line, size_t line_no) {
    const std::string where = source + ":" + std::to_string(line_no);
    const auto fields = split_fields(line);
    if (fields.size() != 2)
      throw TokenizerError(where + ": expected '<base64 token> <rank>', got " + shown(line));
    std::string bytes;
    if (!base64_decode(fields[0], bytes))
      throw TokenizerError(where + ": token " + shown(fields[0]) + " is not valid base64");
    const std::string_view rank = fields[1];
    if (rank.size() > 10 || rank.find_first_not_of("0123456789") != std::string_view::npos)
      throw TokenizerError(where + ": rank " + shown(rank) +
                           " is not a non-negative integer below 2^31");
    tokens.emplace_back(std::move(bytes), std::stoll(std::string(rank)));
    lines.push_back(line_no);
  });
  if (tokens.empty()) throw TokenizerError(source + ": no tokens (an empty rank file)");
  auto impl = std::make_shared<TokenizerImpl>();
  impl->add_tokens(tokens, [&](size_t i) {
    return i < lines.size() ? source + ":" + std::to_string(lines[i]) : source;
  });
  impl->add_rank_merges();
  std::string name = options.name;
  if (name.empty()) {
    name = source.substr(source.find_last_of('/') + 1);
    name = name.substr(0, name.rfind(".tiktoken"));
  }
  impl->finish(options.special_tokens.value_or(gpt2_special_tokens()),
               options.pat_str.value_or(std::string(kGpt2Pattern)), name, source);
  return Tokenizer(std::move(impl));
}

// ---- Hugging Face: vocab + merges -------------------------------------------------------------
namespace {

// Ordinary tokens from a byte-level vocab (token string -> id), leaving out the ids of `specials`
// (Hugging Face lists added tokens in the vocab too).
std::vector<std::pair<std::string, int64_t>> byte_level_vocab(
    const json& vocab, const std::map<std::string, int64_t>& specials, const std::string& where) {
  if (!vocab.is_object()) throw TokenizerError(where + ": expected an object of token -> id");
  std::set<int64_t> special_ids;
  for (const auto& [token, id] : specials) special_ids.insert(id);
  std::vector<std::pair<std::string, int64_t>> tokens;
  tokens.reserve(vocab.size());
  std::string bytes;
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer())
      throw TokenizerError(where + ": token " + shown(token) + " has id " + value.dump() +
                           " (expected an integer)");
    const int64_t id = value.get<int64_t>();
    if (special_ids.count(id)) {
      if (!specials.count(token))
        throw TokenizerError(where + ": token " + shown(token) + " has id " + std::to_string(id) +
                             ", which is a special token's");
      continue;
    }
    if (!detail::byte_level_decode(token, bytes))
      throw TokenizerError(where + ": token " + shown(token) +
                           " has a character outside the byte-level alphabet");
    tokens.emplace_back(bytes, id);
  }
  return tokens;
}

// Adds the merges (left, right token strings; priority = their order) to a tokenizer holding the
// tokens already. `where(i)` names the i-th merge.
void add_merges(TokenizerImpl& impl, const std::vector<std::pair<std::string, std::string>>& merges,
                const std::function<std::string(size_t)>& where) {
  impl.merges.reserve(merges.size());
  std::string left, right;
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& [l, r] = merges[i];
    const auto id_of = [&](const std::string& token, std::string& bytes) {
      uint32_t id = detail::BytesTable::kMissing;
      if (detail::byte_level_decode(token, bytes)) id = impl.encoder.find(bytes);
      if (id == detail::BytesTable::kMissing)
        throw TokenizerError(where(i) + ": unknown token " + shown(token) +
                             " (not in the vocabulary)");
      return id;
    };
    const uint32_t lid = id_of(l, left), rid = id_of(r, right);
    const uint32_t merged = impl.encoder.find(left + right);
    if (merged == detail::BytesTable::kMissing)
      throw TokenizerError(where(i) + ": the merge of " + shown(l) + " and " + shown(r) +
                           " is not in the vocabulary");
    impl.merges.insert(lid, rid, {uint32_t(i), merged});
  }
}

// Every nlohmann exception becomes a TokenizerError: a syntax error (parse_error), and a number
// beyond double's range (out_of_range 406, found by fuzz_tokenizer:
// tests/fixtures/fuzz/fuzz_tokenizer/number-overflow-5e33333333333.bin).
json parse_json(std::string_view contents, const std::string& source) {
  try {
    return json::parse(contents.begin(), contents.end());
  } catch (const json::exception& e) {
    throw TokenizerError(source + ": not valid JSON: " + e.what());
  }
}

}  // namespace

Tokenizer Tokenizer::from_vocab_merges(std::string_view vocab_json, std::string_view merges_txt,
                                       const TokenizerOptions& options,
                                       const std::string& vocab_source,
                                       const std::string& merges_source) {
  const json vocab = parse_json(vocab_json, vocab_source);
  // Special tokens keep their vocab id; one the vocab lacks is added with the id given.
  const std::map<std::string, int64_t> specials =
      options.special_tokens.value_or(gpt2_special_tokens());
  if (vocab.is_object())
    for (const auto& [token, id] : specials)
      if (vocab.contains(token) && vocab[token] != json(id))
        throw TokenizerError(vocab_source + ": special token " + shown(token) + " has id " +
                             vocab[token].dump() + ", not " + std::to_string(id));
  auto impl = std::make_shared<TokenizerImpl>();
  impl->direct_lookup = false;
  impl->add_tokens(byte_level_vocab(vocab, specials, vocab_source),
                   [&](size_t) { return vocab_source; });

  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<size_t> lines;
  for_each_line(merges_txt, [&](std::string_view line, size_t line_no) {
    if (line_no == 1 && line.substr(0, 8) == "#version") return;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos ||
        space == 0 || space + 1 == line.size())
      throw TokenizerError(merges_source + ":" + std::to_string(line_no) +
                           ": expected '<left> <right>', got " + shown(line));
    merges.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
    lines.push_back(line_no);
  });
  add_merges(*impl, merges,
             [&](size_t i) { return merges_source + ":" + std::to_string(lines[i]); });
  std::string name = options.name.empty() ? "gpt2" : options.name;
  impl->finish(specials, options.pat_str.value_or(std::string(kGpt2Pattern)), name, vocab_source);
  return Tokenizer(std::move(impl));
}

// ---- Hugging Face: tokenizer.json -------------------------------------------------------------
namespace {

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>()
                                                                      : "?";
}

// A field that must be absent, null, or equal to one of `ok` values.
void require(const json& parent, const std::string& key, const std::vector<json>& ok,
             const std::string& where) {
  if (!parent.is_object() || !parent.contains(key) || parent[key].is_null()) return;
  for (const json& v : ok)
    if (parent[key] == v) return;
  throw TokenizerError(where + "." + key + " = " + parent[key].dump() + " is unsupported");
}

// A ByteLevel pre-tokenizer: whether it splits with GPT-2's pattern (use_regex).
bool byte_level_pre_tokenizer(const json& pt, const std::string& where) {
  require(pt, "add_prefix_space", {false}, where);
  return !(pt.contains("use_regex") && pt["use_regex"] == json(false));
}

}  // namespace

Tokenizer Tokenizer::from_tokenizer_json(std::string_view contents, const std::string& source,
                                         const std::string& name) {
  const json root = parse_json(contents, source);
  if (!root.is_object()) throw TokenizerError(source + ": expected a JSON object");
  if (!root.contains("model") || !root["model"].is_object())
    throw TokenizerError(source + ": has no \"model\" object");
  const json& model = root["model"];
  const std::string model_type = model.contains("type") ? type_of(model) : "BPE";
  if (model_type != "BPE")
    throw TokenizerError(source + ": model type '" + model_type +
                         "' is unsupported (only \"BPE\", with the ByteLevel pre-tokenizer)");
  require(model, "dropout", {0.0, 0}, source + ": model");
  require(model, "continuing_subword_prefix", {""}, source + ": model");
  require(model, "end_of_word_suffix", {""}, source + ": model");
  require(model, "byte_fallback", {false}, source + ": model");
  require(root, "normalizer", {}, source);
  require(root, "truncation", {}, source);
  require(root, "padding", {}, source);
  if (root.contains("post_processor") && !root["post_processor"].is_null() &&
      type_of(root["post_processor"]) != "ByteLevel")
    throw TokenizerError(source + ": post_processor of type '" + type_of(root["post_processor"]) +
                         "' is unsupported (only ByteLevel or null)");
  if (!root.contains("decoder") || type_of(root["decoder"]) != "ByteLevel")
    throw TokenizerError(source + ": decoder " +
                         (root.contains("decoder") ? "of type '" + type_of(root["decoder"]) + "'"
                                                   : std::string("missing")) +
                         " is unsupported (only ByteLevel)");

  // The pre-tokenizer: ByteLevel with GPT-2's pattern, or Split(pattern) then ByteLevel.
  std::string pattern;
  bool keep_gaps = false;
  const json pre = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json();
  const std::string pre_where = source + ": pre_tokenizer";
  if (type_of(pre) == "ByteLevel") {
    if (!byte_level_pre_tokenizer(pre, pre_where))
      throw TokenizerError(pre_where + ": ByteLevel without use_regex is unsupported");
    pattern = kGpt2Pattern;
    keep_gaps = true;
  } else if (type_of(pre) == "Sequence" && pre.contains("pretokenizers") &&
             pre["pretokenizers"].is_array() && pre["pretokenizers"].size() == 2 &&
             type_of(pre["pretokenizers"][0]) == "Split" &&
             type_of(pre["pretokenizers"][1]) == "ByteLevel") {
    const json& split = pre["pretokenizers"][0];
    require(split, "behavior", {"Isolated"}, pre_where + ".pretokenizers[0]");
    require(split, "invert", {false}, pre_where + ".pretokenizers[0]");
    if (byte_level_pre_tokenizer(pre["pretokenizers"][1], pre_where + ".pretokenizers[1]"))
      throw TokenizerError(pre_where + ": Split then ByteLevel with use_regex is unsupported");
    const json p = split.contains("pattern") ? split["pattern"] : json();
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string())
      pattern = p["Regex"].get<std::string>();
    else if (p.is_object() && p.contains("String") && p["String"].is_string())
      pattern = "\\Q" + p["String"].get<std::string>() + "\\E";
    else
      throw TokenizerError(pre_where +
                           ".pretokenizers[0].pattern: expected {\"Regex\": ...} or "
                           "{\"String\": ...}, got " +
                           p.dump());
    keep_gaps = true;
  } else {
    throw TokenizerError(pre_where + " " +
                         (pre.is_null() ? std::string("null") : pre.dump(-1).substr(0, 200)) +
                         " is unsupported (only ByteLevel, or Sequence[Split, ByteLevel])");
  }

  // Added tokens are the special tokens.
  std::map<std::string, int64_t> specials;
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    if (!root["added_tokens"].is_array())
      throw TokenizerError(source + ": added_tokens: expected an array");
    for (size_t i = 0; i < root["added_tokens"].size(); ++i) {
      const json& t = root["added_tokens"][i];
      const std::string where = source + ": added_tokens[" + std::to_string(i) + "]";
      if (!t.is_object() || !t.contains("content") || !t["content"].is_string() ||
          !t.contains("id") || !t["id"].is_number_integer())
        throw TokenizerError(where + ": expected {\"id\": int, \"content\": str, ...}");
      for (const char* flag : {"single_word", "lstrip", "rstrip"}) require(t, flag, {false}, where);
      const std::string content = t["content"].get<std::string>();
      if (!specials.emplace(content, t["id"].get<int64_t>()).second)
        throw TokenizerError(where + ": duplicate added token " + shown(content));
    }
  }

  if (!model.contains("vocab")) throw TokenizerError(source + ": model has no vocab");
  auto impl = std::make_shared<TokenizerImpl>();
  impl->direct_lookup = model.contains("ignore_merges") && model["ignore_merges"] == json(true);
  impl->keep_gaps = keep_gaps;
  const std::string vocab_where = source + ": model.vocab";
  impl->add_tokens(byte_level_vocab(model["vocab"], specials, vocab_where),
                   [&](size_t) { return vocab_where; });

  if (!model.contains("merges") || !model["merges"].is_array())
    throw TokenizerError(source + ": model has no merges (expected an array)");
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(model["merges"].size());
  for (size_t i = 0; i < model["merges"].size(); ++i) {
    const json& m = model["merges"][i];
    const std::string where = source + ": model.merges[" + std::to_string(i) + "]";
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        throw TokenizerError(where + ": expected \"<left> <right>\", got " + shown(s));
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      throw TokenizerError(where + ": expected \"<left> <right>\" or [left, right], got " +
                           m.dump());
    }
  }
  add_merges(*impl, merges,
             [&](size_t i) { return source + ": model.merges[" + std::to_string(i) + "]"; });
  impl->finish(specials, pattern, name.empty() ? source.substr(source.find_last_of('/') + 1) : name,
               source);
  return Tokenizer(std::move(impl));
}

}  // namespace dual_attention
