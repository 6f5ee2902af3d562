// The GPT-2 byte-level BPE tokenizer, token for token equal to tiktoken (and to Hugging Face
// tokenizers for tokenizer.json / vocab.json + merges.txt), in plain C++: the pre-tokenizer regex
// runs on PCRE2 (with JIT), the BPE merge step is ours.
//
//   using dual_attention::Tokenizer;
//   Tokenizer enc = dual_attention::get_encoding("gpt2");
//   std::vector<int64_t> ids = enc.encode_ordinary("Hello world");   // {15496, 995}
//   std::string text = enc.decode(ids);                              // "Hello world"
//
// Formats (Tokenizer::from_file detects them):
//   1. tiktoken rank files (gpt2.tiktoken): one "<base64 token> <rank>" per line; the rank is the
//      token id and the merge priority. The pre-tokenizer pattern and the special tokens come
//      separately (GPT-2's by default).
//   2. Hugging Face tokenizer.json: a "BPE" model (vocab, merges), the "ByteLevel" pre-tokenizer
//      (alone, or after a "Split" on a regex) and decoder, added tokens. Anything else is an
//      "unsupported" error.
//   3. GPT-2's vocab.json + merges.txt ("#version" header line, then "left right" per line).
//
// Semantics (tiktoken's): the text is cut into pieces by the pattern; a piece that is one token
// becomes it; any other piece is merged from its bytes, always the adjacent pair of lowest rank
// (leftmost on ties). For tokenizer.json and vocab.json + merges.txt the priority of a pair is its
// line in the merges, as in Hugging Face tokenizers.
//
// Unicode: tiktoken's patterns are written for Rust's regex crate, where \s means White_Space,
// \w means Alphabetic + M + Nd + Pc + Join_Control and $ means the end of the text; the pattern is
// rewritten to those meanings before PCRE2 compiles it (PCRE2_UTF | PCRE2_UCP). \p{..} classes use
// PCRE2's Unicode tables (10.42: Unicode 14), which can differ from tiktoken's for code points
// assigned after that.
//
// Text given to encode must be UTF-8; invalid sequences are first replaced with U+FFFD as
// Python's bytes.decode("utf-8", "replace") does (tiktoken's encode takes a Python str, which can
// never hold invalid UTF-8). decode() replaces invalid UTF-8 in its output the same way, as
// tiktoken's decode(errors="replace").
//
// Errors: malformed files and bad arguments throw TokenizerError (a std::invalid_argument; a
// ValueError in Python) whose message names the file and line, or the token, or the argument and
// value; a token id that is not in the vocabulary throws TokenIdError (a KeyError in Python, as
// tiktoken's). A file that cannot be read is a TokenizerError naming the path and errno's text.
//
// Thread safety: a Tokenizer is immutable apart from its cache of merged pieces, which is
// internally locked; copies share one vocabulary and cache. Any number of threads may encode and
// decode with one Tokenizer at once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dual_attention {

// Malformed tokenizer files, bad arguments, text holding a disallowed special token.
class TokenizerError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A token id that the vocabulary does not have (decode, decode_single_token_bytes).
class TokenIdError : public TokenizerError {
 public:
  TokenIdError(const std::string& message, int64_t token)
      : TokenizerError(message), token_(token) {}
  int64_t token() const { return token_; }

 private:
  int64_t token_;
};

// A set of special tokens for encode: tiktoken's "all", or the strings named.
struct SpecialTokenSet {
  SpecialTokenSet() = default;  // the empty set
  SpecialTokenSet(std::initializer_list<std::string> tokens) : tokens(tokens) {}
  explicit SpecialTokenSet(std::set<std::string> tokens) : tokens(std::move(tokens)) {}
  static SpecialTokenSet all() {
    SpecialTokenSet s;
    s.is_all = true;
    return s;
  }
  bool is_all = false;
  std::set<std::string> tokens;  // ignored when is_all
};

// GPT-2's pre-tokenizer pattern (tiktoken's "gpt2" / "r50k_base") and special tokens.
inline constexpr std::string_view kGpt2Pattern =
    R"('(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kEndOfText = "<|endoftext|>";
inline const std::map<std::string, int64_t>& gpt2_special_tokens() {
  static const std::map<std::string, int64_t> tokens{{std::string(kEndOfText), 50256}};
  return tokens;
}

// What a rank file does not carry (and what overrides vocab.json + merges.txt's defaults).
struct TokenizerOptions {
  // The encoding's name (tiktoken's Encoding.name). Empty: the file's stem.
  std::string name;
  // The pre-tokenizer regex. Unset: GPT-2's.
  std::optional<std::string> pat_str;
  // Special token -> id. Unset: GPT-2's {"<|endoftext|>": 50256}.
  std::optional<std::map<std::string, int64_t>> special_tokens;
};

namespace detail {
struct TokenizerImpl;
}

class Tokenizer {
 public:
  // ---- loading -------------------------------------------------------------------------------
  // A file of any of the three formats, detected by content and name: a folder holding
  // tokenizer.json, or vocab.json + merges.txt; a JSON file with a "model" (tokenizer.json); a
  // vocab.json or merges.txt (the other one is read from the same folder); anything else is read
  // as a tiktoken rank file. `options` applies to rank files and vocab.json + merges.txt; given
  // for a tokenizer.json (which carries its own) it is an error.
  static Tokenizer from_file(const std::string& path, const TokenizerOptions& options = {});

  // From contents in memory. `source` names them in error messages ("<file>:<line>: ...").
  static Tokenizer from_tiktoken_bpe(std::string_view contents,
                                     const TokenizerOptions& options = {},
                                     const std::string& source = "<tiktoken ranks>");
  // `name`: the encoding's name (empty: the source's file name).
  static Tokenizer from_tokenizer_json(std::string_view contents,
                                       const std::string& source = "<tokenizer.json>",
                                       const std::string& name = "");
  static Tokenizer from_vocab_merges(std::string_view vocab_json, std::string_view merges_txt,
                                     const TokenizerOptions& options = {},
                                     const std::string& vocab_source = "<vocab.json>",
                                     const std::string& merges_source = "<merges.txt>");
  // tiktoken.Encoding(name, pat_str=, mergeable_ranks=, special_tokens=): token bytes -> rank.
  static Tokenizer from_ranks(const std::vector<std::pair<std::string, int64_t>>& mergeable_ranks,
                              const std::string& pat_str,
                              const std::map<std::string, int64_t>& special_tokens,
                              const std::string& name = "");

  // ---- encoding ------------------------------------------------------------------------------
  // Token ids of `text` (UTF-8), special tokens treated as ordinary text.
  std::vector<int64_t> encode_ordinary(std::string_view text) const;

  // tiktoken's encode: a special token in `allowed_special` becomes its id; one in
  // `disallowed_special` (by default every special token not allowed; the strings need not be
  // special tokens) anywhere in the text throws TokenizerError naming it; the rest is ordinary
  // text.
  std::vector<int64_t> encode(
      std::string_view text, const SpecialTokenSet& allowed_special = {},
      const SpecialTokenSet& disallowed_special = SpecialTokenSet::all()) const;

  // The id of one token given as its bytes (a special token's name, or an ordinary token's
  // bytes); TokenizerError if it is neither.
  int64_t encode_single_token(std::string_view token_bytes) const;

  // Many texts at once, over LibTorch's intra-op threads (at::parallel_for; at::set_num_threads /
  // torch.set_num_threads / --threads). Same results as one call each.
  std::vector<std::vector<int64_t>> encode_ordinary_batch(
      const std::vector<std::string>& texts) const;
  std::vector<std::vector<int64_t>> encode_batch(
      const std::vector<std::string>& texts, const SpecialTokenSet& allowed_special = {},
      const SpecialTokenSet& disallowed_special = SpecialTokenSet::all()) const;

  // ---- decoding ------------------------------------------------------------------------------
  // The bytes of the tokens, concatenated. TokenIdError for an id not in the vocabulary.
  std::string decode_bytes(const std::vector<int64_t>& ids) const;
  // decode_bytes, as valid UTF-8: invalid sequences replaced by U+FFFD (errors="replace").
  std::string decode(const std::vector<int64_t>& ids) const;
  // The bytes of one token (a special token's name for a special token).
  std::string decode_single_token_bytes(int64_t id) const;
  std::vector<std::string> decode_batch(const std::vector<std::vector<int64_t>>& batch) const;
  std::vector<std::string> decode_bytes_batch(const std::vector<std::vector<int64_t>>& batch) const;

  // ---- the vocabulary ------------------------------------------------------------------------
  // max_token_value() + 1, as tiktoken's n_vocab.
  int64_t n_vocab() const;
  int64_t max_token_value() const;
  // The id of "<|endoftext|>"; TokenizerError if the encoding has no such special token.
  int64_t eot_token() const;
  const std::map<std::string, int64_t>& special_tokens() const;
  std::set<std::string> special_tokens_set() const;
  const std::string& name() const;
  const std::string& pat_str() const;
  // Whether `id` is a token (ordinary or special).
  bool contains(int64_t id) const;

 private:
  explicit Tokenizer(std::shared_ptr<const detail::TokenizerImpl> impl);
  std::shared_ptr<const detail::TokenizerImpl> impl_;
};

// The GPT-2 encoding (name "gpt2"; r50k_base has the same ranks, pattern and special token and is
// accepted too). The files are looked for in this order, the first found is used:
//   1. `path`, when given: a file of any of the three formats, or a folder holding tokenizer.json
//      or vocab.json + merges.txt (an error if it does not exist);
//   2. the environment variable DUAL_ATTENTION_GPT2_TOKENIZER, the same (an error if set to a
//      path that does not exist);
//   3. $DUAL_ATTENTION_DATA_DIR/gpt2.tiktoken (default ${XDG_CACHE_HOME:-~/.cache}/dual-attention/
//      gpt2.tiktoken, what scripts/fetch_data.sh caches), when it exists;
//   4. tokenizer.json of the Hub repository openai-community/gpt2, through the Hub client and its
//      cache (hub/hub.h: HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_OFFLINE...; offline works once cached).
//      Only in builds with the Hub client (DUAL_ATTENTION_WITH_HUB).
// Loaded files are kept: a second call with the same file returns the same (shared) tokenizer.
Tokenizer get_encoding(const std::string& name = "gpt2",
                       const std::optional<std::string>& path = std::nullopt);

// The tokenizer of a model checkpoint folder: `path` when given (any file Tokenizer::from_file
// reads); else the folder's own tokenizer.json, vocab.json + merges.txt, or *.tiktoken file, in
// that order; else GPT-2's (get_encoding("gpt2")), which the published DAT models use.
Tokenizer tokenizer_for_model(const std::string& model_folder,
                              const std::optional<std::string>& path = std::nullopt);

// Where get_encoding(name, path) would load from, without loading: a local path, or
// "hub:openai-community/gpt2/tokenizer.json" when it would download. TokenizerError as
// get_encoding for an unknown name or a missing explicit path.
std::string find_encoding_file(const std::string& name = "gpt2",
                               const std::optional<std::string>& path = std::nullopt);

// Python's bytes.decode("utf-8", "replace"): each maximal invalid subsequence (Unicode's "maximal
// subpart" practice) becomes U+FFFD; valid input is returned unchanged.
std::string utf8_replace_invalid(std::string_view bytes);

}  // namespace dual_attention
