// The GPT-2 tokenizer: token for token against tiktoken (tests/fixtures/tokenizer/, made by
// tests/fixtures/make_tokenizer_fixtures.py from the real ranks), the three formats against each
// other (tokenizer.json, vocab.json + merges.txt built by Hugging Face tokenizers from the ranks),
// special tokens, round trips, UTF-8 repair against Python's, get_encoding's search order, and
// every malformed input a clear error. The GPT-2 ranks come from $DUAL_ATTENTION_DATA_DIR
// (scripts/fetch_data.sh, which scripts/setup.sh runs).
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "dual_attention/tokenizer.h"
#include "test_paths.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using dual_attention::SpecialTokenSet;
using dual_attention::TokenIdError;
using dual_attention::Tokenizer;
using dual_attention::TokenizerError;
using dual_attention::TokenizerOptions;
using nlohmann::json;
using test_support::EnvGuard;
using test_support::make_temp_dir;
using Ids = std::vector<int64_t>;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

fs::path data_dir() {
  if (const char* d = std::getenv("DUAL_ATTENTION_DATA_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "dual-attention";
  return fs::path(std::getenv("HOME")) / ".cache" / "dual-attention";
}

fs::path ranks_path() {
  const fs::path p = data_dir() / "gpt2.tiktoken";
  if (!fs::exists(p))
    throw std::runtime_error(p.string() + " is missing: run scripts/fetch_data.sh (setup.sh does)");
  return p;
}

const json& fixture() {
  static const json j = json::parse(
      read_file(fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "tokenizer" / "gpt2_tiktoken.json"));
  return j;
}

const Tokenizer& gpt2() {
  static const Tokenizer t = Tokenizer::from_file(ranks_path().string());
  return t;
}

// tokenizer.json, vocab.json and merges.txt, built from the ranks by Hugging Face tokenizers
// (tests/helpers/make_hf_tokenizer_files.py), once per test run.
const fs::path& hf_files() {
  static const fs::path dir = [] {
    const fs::path out = make_temp_dir("tok_hf");
    const fs::path script = fs::path(DUAL_ATTENTION_FIXTURE_DIR).parent_path() / "helpers" /
                            "make_hf_tokenizer_files.py";
    const std::string command = std::string("'") + DUAL_ATTENTION_PYTHON + "' '" + script.string() +
                                "' --ranks '" + ranks_path().string() + "' --out '" + out.string() +
                                "' > /dev/null";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
    return out;
  }();
  return dir;
}

// A small tokenizer.json cut from the full one: the tokens with ids below 400 and the merges among
// them (enough for the error tests, quick to parse).
const json& small_tokenizer_json() {
  static const json small = [] {
    json j = json::parse(read_file(hf_files() / "tokenizer.json"));
    json vocab = json::object();
    for (const auto& [token, id] : j["model"]["vocab"].items())
      if (id.get<int64_t>() < 400 || id.get<int64_t>() == 50256) vocab[token] = id;
    json merges = json::array();
    for (const json& m : j["model"]["merges"]) {
      const std::string l = m.is_string()
                                ? m.get<std::string>().substr(0, m.get<std::string>().find(' '))
                                : m[0].get<std::string>();
      const std::string r =
          m.is_string() ? m.get<std::string>().substr(l.size() + 1) : m[1].get<std::string>();
      if (vocab.contains(l) && vocab.contains(r) && vocab.contains(l + r))
        merges.push_back(json::array({l, r}));
    }
    j["model"]["vocab"] = vocab;
    j["model"]["merges"] = merges;
    return j;
  }();
  return small;
}

Ids ids_of(const json& j) { return j.get<Ids>(); }

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// The message of the TokenizerError that `f` throws ("" if it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const TokenizerError& e) {
    return e.what();
  }
  return "";
}

// A tiny rank file: the 256 bytes (rank = byte), then the given multi-byte tokens.
std::string base64(const std::string& bytes) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v =
        (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += a[(v >> k) & 63];
  }
  if (bytes.size() - i == 1) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += std::string{a[(v >> 18) & 63], a[(v >> 12) & 63], '=', '='};
  } else if (bytes.size() - i == 2) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += std::string{a[(v >> 18) & 63], a[(v >> 12) & 63], a[(v >> 6) & 63], '='};
  }
  return out;
}

std::string tiny_ranks(const std::vector<std::string>& extra = {"ab", "abc"}) {
  std::string out;
  for (int b = 0; b < 256; ++b)
    out += base64(std::string(1, char(b))) + " " + std::to_string(b) + "\n";
  for (size_t i = 0; i < extra.size(); ++i)
    out += base64(extra[i]) + " " + std::to_string(256 + i) + "\n";
  return out;
}

}  // namespace

// ---- parity with tiktoken -----------------------------------------------------------------------

TEST(Tokenizer, Gpt2RanksMatchTiktokenTokenForToken) {
  const Tokenizer& enc = gpt2();
  EXPECT_EQ(enc.n_vocab(), 50257);
  EXPECT_EQ(enc.eot_token(), 50256);
  EXPECT_EQ(enc.name(), "gpt2");
  ASSERT_GE(fixture()["cases"].size(), 20u);
  for (const json& c : fixture()["cases"]) {
    SCOPED_TRACE(c["id"].get<std::string>());
    const std::string text = c["text"];
    EXPECT_EQ(enc.encode_ordinary(text), ids_of(c["ordinary"]));
    EXPECT_EQ(enc.encode(text, SpecialTokenSet::all()), ids_of(c["all"]));
    EXPECT_EQ(enc.encode(text, {}, {}), ids_of(c["none"]));
    if (c["disallowed"].is_null()) {
      EXPECT_EQ(enc.encode(text), ids_of(c["ordinary"]));
    } else {
      const std::string message = error_of([&] { enc.encode(text); });
      EXPECT_NE(message.find("disallowed special token '<|endoftext|>'"), std::string::npos)
          << message;
    }
  }
}

TEST(Tokenizer, Cl100kPatternWithGpt2RanksMatchesTiktoken) {
  TokenizerOptions options;
  options.pat_str = fixture()["cl100k_pattern"].get<std::string>();
  const Tokenizer enc = Tokenizer::from_file(ranks_path().string(), options);
  for (const json& c : fixture()["cases"]) {
    SCOPED_TRACE(c["id"].get<std::string>());
    EXPECT_EQ(enc.encode_ordinary(c["text"].get<std::string>()), ids_of(c["cl100k"]));
  }
}

TEST(Tokenizer, ThreeFormatsGiveTheSameIds) {
  const Tokenizer json_tok = Tokenizer::from_file((hf_files() / "tokenizer.json").string());
  const Tokenizer vocab_merges = Tokenizer::from_file((hf_files() / "vocab.json").string());
  const Tokenizer from_merges_txt = Tokenizer::from_file((hf_files() / "merges.txt").string());
  for (const Tokenizer* enc : {&json_tok, &vocab_merges, &from_merges_txt}) {
    EXPECT_EQ(enc->n_vocab(), 50257);
    EXPECT_EQ(enc->eot_token(), 50256);
    for (const json& c : fixture()["cases"]) {
      SCOPED_TRACE(c["id"].get<std::string>());
      const std::string text = c["text"];
      EXPECT_EQ(enc->encode_ordinary(text), ids_of(c["ordinary"]));
      EXPECT_EQ(enc->encode(text, SpecialTokenSet::all()), ids_of(c["all"]));
    }
  }
  // Every token's bytes agree.
  for (int64_t id = 0; id < 50257; id += 7)
    EXPECT_EQ(json_tok.decode_single_token_bytes(id), gpt2().decode_single_token_bytes(id)) << id;
}

// ---- decoding -----------------------------------------------------------------------------------

TEST(Tokenizer, DecodeOfEncodeIsTheText) {
  const Tokenizer& enc = gpt2();
  for (const json& c : fixture()["cases"]) {
    SCOPED_TRACE(c["id"].get<std::string>());
    const std::string text = c["text"];
    EXPECT_EQ(enc.decode(enc.encode_ordinary(text)), text);
    EXPECT_EQ(enc.decode(enc.encode(text, SpecialTokenSet::all())), text);
    EXPECT_EQ(enc.decode_bytes(ids_of(c["all"])), text);
  }
}

TEST(Tokenizer, DecodeReplacesInvalidUtf8AsPythonDoes) {
  const Tokenizer& enc = gpt2();
  ASSERT_GE(fixture()["utf8"].size(), 300u);
  for (const json& c : fixture()["utf8"]) {
    const std::string bytes = from_hex(c["hex"]), expected = from_hex(c["decoded_hex"]);
    SCOPED_TRACE(c["hex"].get<std::string>());
    EXPECT_EQ(dual_attention::utf8_replace_invalid(bytes), expected);
    // The same bytes as single-byte tokens.
    Ids ids;
    for (char b : bytes) ids.push_back(enc.encode_single_token(std::string(1, b)));
    EXPECT_EQ(enc.decode_bytes(ids), bytes);
    EXPECT_EQ(enc.decode(ids), expected);
    // Encoding invalid UTF-8 first repairs it as Python would.
    EXPECT_EQ(enc.encode_ordinary(bytes), enc.encode_ordinary(expected));
  }
}

TEST(Tokenizer, DecodeSingleTokenBytes) {
  const Tokenizer& enc = gpt2();
  EXPECT_EQ(enc.decode_single_token_bytes(50256), "<|endoftext|>");
  EXPECT_EQ(enc.decode_single_token_bytes(enc.encode_ordinary(" the")[0]), " the");
  EXPECT_EQ(enc.encode_single_token("<|endoftext|>"), 50256);
  EXPECT_EQ(enc.encode_single_token(" the"), enc.encode_ordinary(" the")[0]);
  EXPECT_THROW(enc.decode_single_token_bytes(50257), TokenIdError);
  EXPECT_THROW(enc.decode_single_token_bytes(-1), TokenIdError);
}

// ---- special tokens -----------------------------------------------------------------------------

TEST(Tokenizer, SpecialTokensAllowedDisallowedOrdinaryAsTiktoken) {
  const Tokenizer& enc = gpt2();
  const std::string text = "a<|endoftext|>b";
  const Ids ordinary = enc.encode_ordinary(text);
  // Allowed by name: one token.
  const Ids allowed = enc.encode(text, {"<|endoftext|>"});
  ASSERT_EQ(allowed.size(), 3u);
  EXPECT_EQ(allowed[1], 50256);
  EXPECT_EQ(enc.encode(text, SpecialTokenSet::all()), allowed);
  // Not allowed but not disallowed: ordinary text.
  EXPECT_EQ(enc.encode(text, {}, {}), ordinary);
  EXPECT_GT(ordinary.size(), 3u);
  // Disallowed (the default): an error naming the token and the ways out.
  const std::string message = error_of([&] { enc.encode(text); });
  EXPECT_NE(message.find("'<|endoftext|>'"), std::string::npos) << message;
  EXPECT_NE(message.find("allowed_special"), std::string::npos) << message;
  // Any string can be disallowed, special or not.
  EXPECT_NE(error_of([&] { enc.encode("say foo", {}, {"foo"}); }).find("'foo'"), std::string::npos);
  EXPECT_EQ(enc.encode("say foo", {}, {"bar"}), enc.encode_ordinary("say foo"));
  // Allowed strings that are not special tokens change nothing.
  EXPECT_EQ(enc.encode("say foo", {"foo"}), enc.encode_ordinary("say foo"));
  EXPECT_EQ(enc.special_tokens_set(), std::set<std::string>{"<|endoftext|>"});
}

TEST(Tokenizer, BatchesEqualOneCallEach) {
  const Tokenizer& enc = gpt2();
  std::vector<std::string> texts;
  for (const json& c : fixture()["cases"]) texts.push_back(c["text"]);
  const int saved_threads = at::get_num_threads();
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    const auto batch = enc.encode_batch(texts, SpecialTokenSet::all());
    const auto ordinary = enc.encode_ordinary_batch(texts);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(batch[i], enc.encode(texts[i], SpecialTokenSet::all()));
      EXPECT_EQ(ordinary[i], enc.encode_ordinary(texts[i]));
    }
    EXPECT_EQ(enc.decode_batch(batch), texts);
    EXPECT_THROW(enc.encode_batch(texts), TokenizerError);  // a text holds <|endoftext|>
    EXPECT_THROW(enc.decode_batch({{1, 2}, {50300}}), TokenIdError);
  }
  at::set_num_threads(saved_threads);
}

// ---- get_encoding
// ---------------------------------------------------------------------------------

TEST(Tokenizer, GetEncodingSearchOrder) {
  EnvGuard env;
  const fs::path dir = make_temp_dir("tok_search");
  fs::copy_file(ranks_path(), dir / "gpt2.tiktoken");
  const fs::path other = make_temp_dir("tok_other");
  fs::copy_file(ranks_path(), other / "gpt2.tiktoken");
  env.set("DUAL_ATTENTION_DATA_DIR", dir.string());
  env.unset("DUAL_ATTENTION_GPT2_TOKENIZER");
  // 3. the data folder.
  EXPECT_EQ(fs::path(dual_attention::find_encoding_file("gpt2")), dir / "gpt2.tiktoken");
  // 2. the environment variable: a file, or a folder of the Hugging Face files.
  env.set("DUAL_ATTENTION_GPT2_TOKENIZER", (other / "gpt2.tiktoken").string());
  EXPECT_EQ(fs::path(dual_attention::find_encoding_file("gpt2")), other / "gpt2.tiktoken");
  env.set("DUAL_ATTENTION_GPT2_TOKENIZER", hf_files().string());
  EXPECT_EQ(fs::path(dual_attention::find_encoding_file()), hf_files());
  const Tokenizer from_folder = dual_attention::get_encoding("gpt2");
  EXPECT_EQ(from_folder.name(), "gpt2");
  EXPECT_EQ(from_folder.encode_ordinary("Hello world"), gpt2().encode_ordinary("Hello world"));
  // 1. an explicit path wins.
  EXPECT_EQ(fs::path(dual_attention::find_encoding_file("gpt2", (dir / "gpt2.tiktoken").string())),
            dir / "gpt2.tiktoken");
  // Missing explicit files are errors, not fall-throughs.
  EXPECT_NE(error_of([&] {
              dual_attention::get_encoding("gpt2", "/nonexistent/x.tiktoken");
            }).find("'/nonexistent/x.tiktoken' does not exist"),
            std::string::npos);
  env.set("DUAL_ATTENTION_GPT2_TOKENIZER", "/nonexistent/tok");
  EXPECT_NE(error_of([&] { dual_attention::get_encoding(); }).find("DUAL_ATTENTION_GPT2_TOKENIZER"),
            std::string::npos);
  EXPECT_NE(error_of([&] { dual_attention::get_encoding("cl100k_base"); }).find("'cl100k_base'"),
            std::string::npos);
  // Loaded once: the same file gives the same tokenizer.
  env.unset("DUAL_ATTENTION_GPT2_TOKENIZER");
  EXPECT_EQ(dual_attention::get_encoding().encode_ordinary("x y"), gpt2().encode_ordinary("x y"));
  fs::remove_all(dir);
  fs::remove_all(other);
}

// ---- malformed input
// ------------------------------------------------------------------------------

TEST(TokenizerErrors, RankFileErrorsNameFileAndLine) {
  const Tokenizer tiny = Tokenizer::from_tiktoken_bpe(tiny_ranks(), {}, "tiny.tiktoken");
  EXPECT_EQ(tiny.encode_ordinary("abc ab"), (Ids{257, 32, 256}));
  EXPECT_EQ(tiny.name(), "tiny");

  std::string bad = tiny_ranks();
  bad.replace(bad.find("\n") + 1, 4, "!!!!");  // line 2
  EXPECT_NE(error_of([&] {
              Tokenizer::from_tiktoken_bpe(bad, {}, "r.tiktoken");
            }).find("r.tiktoken:2: token '!!!!"),
            std::string::npos);
  const std::string dup_token = tiny_ranks({"ab", "ab"});
  std::string m = error_of([&] { Tokenizer::from_tiktoken_bpe(dup_token, {}, "d.tiktoken"); });
  EXPECT_NE(m.find("d.tiktoken:258: duplicate token"), std::string::npos) << m;
  EXPECT_NE(m.find("d.tiktoken:257"), std::string::npos) << m;
  const std::string dup_rank = tiny_ranks() + base64("xyz") + " 256\n";
  m = error_of([&] { Tokenizer::from_tiktoken_bpe(dup_rank, {}, "d.tiktoken"); });
  EXPECT_NE(m.find("d.tiktoken:259: duplicate id 256"), std::string::npos) << m;
  m = error_of([&] { Tokenizer::from_tiktoken_bpe(tiny_ranks() + "YWJj\n", {}, "m.tiktoken"); });
  EXPECT_NE(m.find("m.tiktoken:259: expected '<base64 token> <rank>'"), std::string::npos) << m;
  m = error_of([&] { Tokenizer::from_tiktoken_bpe(tiny_ranks() + "YWJj -4\n", {}, "n.tiktoken"); });
  EXPECT_NE(m.find("n.tiktoken:259: rank '-4'"), std::string::npos) << m;
  // A byte-level BPE needs every byte.
  std::string no_newline = tiny_ranks();
  no_newline.erase(no_newline.find(base64("\n") + " 10\n"), base64("\n").size() + 4);
  m = error_of([&] { Tokenizer::from_tiktoken_bpe(no_newline, {}, "b.tiktoken"); });
  EXPECT_NE(m.find("no token for the byte 0x0A"), std::string::npos) << m;
  EXPECT_NE(
      error_of([&] { Tokenizer::from_tiktoken_bpe("", {}, "e.tiktoken"); }).find("e.tiktoken"),
      std::string::npos);
  // Ids that would need a huge table.
  m = error_of([&] { Tokenizer::from_tiktoken_bpe(tiny_ranks() + "YWJj 2000000000\n"); });
  EXPECT_NE(m.find("2000000000"), std::string::npos) << m;
  // A pattern PCRE2 cannot compile; a special token on an ordinary id.
  TokenizerOptions options;
  options.pat_str = "(unclosed";
  m = error_of([&] { Tokenizer::from_tiktoken_bpe(tiny_ranks(), options, "p.tiktoken"); });
  EXPECT_NE(m.find("p.tiktoken: pattern (unclosed does not compile"), std::string::npos) << m;
  options.pat_str.reset();
  options.special_tokens = std::map<std::string, int64_t>{{"<|x|>", 97}};
  m = error_of([&] { Tokenizer::from_tiktoken_bpe(tiny_ranks(), options, "s.tiktoken"); });
  EXPECT_NE(m.find("special token '<|x|>' has id 97"), std::string::npos) << m;
}

TEST(TokenizerErrors, TokenizerJsonUnsupportedOrIncomplete) {
  const json& tj = small_tokenizer_json();
  const auto error_for = [](const json& j) {
    return error_of([&] { Tokenizer::from_tokenizer_json(j.dump(), "t.json"); });
  };
  // The cut vocabulary itself loads and merges as the full one.
  const Tokenizer small = Tokenizer::from_tokenizer_json(tj.dump(), "t.json");
  EXPECT_EQ(small.encode_ordinary(" the"), gpt2().encode_ordinary(" the"));
  json wordpiece = tj;
  wordpiece["model"]["type"] = "WordPiece";
  EXPECT_NE(error_for(wordpiece).find("t.json: model type 'WordPiece' is unsupported"),
            std::string::npos);
  json no_merges = tj;
  no_merges["model"].erase("merges");
  EXPECT_NE(error_for(no_merges).find("t.json: model has no merges"), std::string::npos);
  json unknown = tj;
  unknown["model"]["merges"][5] = "Ġzzzq Ġt";
  std::string m = error_for(unknown);
  EXPECT_NE(m.find("t.json: model.merges[5]: unknown token 'Ġzzzq'"), std::string::npos) << m;
  json normalizer = tj;
  normalizer["normalizer"] = {{"type", "NFC"}};
  EXPECT_NE(error_for(normalizer).find("normalizer"), std::string::npos);
  json prefix = tj;
  prefix["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_NE(error_for(prefix).find("add_prefix_space = true is unsupported"), std::string::npos);
  json bad_char = tj;
  bad_char["model"]["vocab"]["a b"] = 399;
  EXPECT_NE(error_for(bad_char).find("token 'a b' has a character outside the byte-level"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              Tokenizer::from_tokenizer_json("{\"model\": ", "x.json");
            }).find("x.json: not valid JSON"),
            std::string::npos);
  // Found by fuzz_tokenizer: a number beyond double's range escaped as nlohmann's out_of_range
  // (tests/fixtures/fuzz/fuzz_tokenizer/number-overflow-5e33333333333.bin).
  EXPECT_NE(error_of([] {
              Tokenizer::from_tokenizer_json("[5e33333]", "x.json");
            }).find("x.json: not valid JSON: [json.exception.out_of_range.406] number overflow"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              Tokenizer::from_vocab_merges("{\"a\": 1e999}", "", {}, "v.json");
            }).find("v.json: not valid JSON"),
            std::string::npos);
}

TEST(TokenizerErrors, MergesLineNamingAnUnknownToken) {
  const json& tj = small_tokenizer_json();
  const std::string vocab = tj["model"]["vocab"].dump();
  std::string merges = "#version: 0.2\n";
  for (const json& m : tj["model"]["merges"])
    merges += m[0].get<std::string>() + " " + m[1].get<std::string>() + "\n";
  EXPECT_EQ(Tokenizer::from_vocab_merges(vocab, merges).encode_ordinary(" the"),
            gpt2().encode_ordinary(" the"));
  // Line 3 (after the #version line): an unknown left token.
  const size_t line3 = merges.find('\n', merges.find('\n') + 1) + 1;
  merges.replace(line3, merges.find(' ', line3) - line3, "Ġqqqzz");
  const std::string m = error_of(
      [&] { Tokenizer::from_vocab_merges(vocab, merges, {}, "vocab.json", "merges.txt"); });
  EXPECT_NE(m.find("merges.txt:3: unknown token 'Ġqqqzz'"), std::string::npos) << m;
  EXPECT_NE(error_of([&] {
              Tokenizer::from_vocab_merges(vocab, "#version: 0.2\nĠt\n", {}, "v", "merges.txt");
            }).find("merges.txt:2: expected '<left> <right>'"),
            std::string::npos);
}

TEST(TokenizerErrors, DecodeIdOutOfRange) {
  const Tokenizer& enc = gpt2();
  try {
    enc.decode({15496, 50257, 995});
    FAIL() << "no error";
  } catch (const TokenIdError& e) {
    EXPECT_EQ(e.token(), 50257);
    EXPECT_NE(std::string(e.what()).find("token id 50257 (at position 1)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(enc.decode_bytes({-5}), TokenIdError);
  EXPECT_NE(
      error_of([] { Tokenizer::from_file("/nonexistent/gpt2.tiktoken"); }).find("does not exist"),
      std::string::npos);
}
