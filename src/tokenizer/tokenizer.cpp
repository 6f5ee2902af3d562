// Encoding and decoding: the pre-tokenizer, the BPE merge, special tokens, UTF-8 repair; and the
// checks every loader ends with (TokenizerImpl::add_tokens / add_rank_merges / finish).
//
// The merge (tiktoken's byte_pair_merge, Hugging Face's Word::merge_all): a piece starts as its
// bytes; while some adjacent pair of parts has a merge, the pair of lowest priority (leftmost on
// ties) becomes one part. Parts are a linked list over byte positions and candidate pairs sit in a
// min-heap keyed by (priority, position), so a piece of n bytes costs O(n log n) instead of
// tiktoken's O(n^2) rescans; a heap entry whose parts have changed since it was pushed is skipped.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "tokenizer_impl.h"

namespace dual_attention {

namespace detail {

namespace {

// The length of the valid UTF-8 sequence at s[i] (1..4), or 0 with `bad` set to how many bytes
// form the maximal invalid subpart (Unicode's "maximal subpart" practice, which Python's
// bytes.decode("utf-8", "replace") follows).
inline size_t utf8_sequence(std::string_view s, size_t i, size_t& bad) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size()) {
      bad = k;
      return 0;
    }
    const unsigned char x = b(k);
    const bool ok = k == 1 ? (x >= lo && x <= hi) : (x >= 0x80 && x <= 0xBF);
    if (!ok) {
      bad = k;
      return 0;
    }
  }
  return need + 1;
}

// The offset of the first invalid UTF-8 byte, or npos.
size_t first_invalid_utf8(std::string_view s) {
  size_t i = 0, bad = 0;
  while (i < s.size()) {
    // Eight ASCII bytes at a time.
    if (i + 8 <= s.size()) {
      uint64_t word;
      std::memcpy(&word, s.data() + i, 8);
      if ((word & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    const size_t n = utf8_sequence(s, i, bad);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

struct HeapEntry {
  uint32_t priority, pos, left, right, merged;
  bool operator>(const HeapEntry& o) const {
    return priority != o.priority ? priority > o.priority : pos > o.pos;
  }
};

constexpr uint32_t kDead = UINT32_MAX;

}  // namespace

void TokenizerImpl::merge_piece(std::string_view piece, std::vector<int64_t>& out) const {
  const size_t n = piece.size();
  thread_local std::vector<uint32_t> ids, next, prev;
  thread_local std::vector<HeapEntry> heap;
  ids.resize(n);
  next.resize(n);
  prev.resize(n);
  heap.clear();
  const auto push = [&](uint32_t pos) {
    const uint32_t l = ids[pos], r = ids[next[pos]];
    const PairTable::Merge m = merges.find(l, r);
    if (m.merged == UINT32_MAX) return;
    heap.push_back({m.priority, pos, l, r, m.merged});
    std::push_heap(heap.begin(), heap.end(), std::greater<HeapEntry>());
  };
  for (size_t i = 0; i < n; ++i) {
    ids[i] = byte_token[static_cast<unsigned char>(piece[i])];
    next[i] = uint32_t(i + 1);
    prev[i] = uint32_t(i) - 1;  // wraps for i = 0; never read there
  }
  for (size_t i = 0; i + 1 < n; ++i) push(uint32_t(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<HeapEntry>());
    const HeapEntry e = heap.back();
    heap.pop_back();
    const uint32_t r = next[e.pos];
    if (ids[e.pos] != e.left || r >= n || ids[r] != e.right) continue;  // stale
    ids[e.pos] = e.merged;
    ids[r] = kDead;
    next[e.pos] = next[r];
    if (next[r] < n) prev[next[r]] = e.pos;
    if (e.pos > 0) push(prev[e.pos]);
    if (next[e.pos] < n) push(e.pos);
  }
  for (size_t i = 0; i < n; i = next[i]) out.push_back(ids[i]);
}

void TokenizerImpl::encode_ordinary(std::string_view text, std::vector<int64_t>& out) const {
  const auto encode_piece = [&](std::string_view piece) {
    const uint64_t h = hash_bytes(piece);
    if (direct_lookup) {
      const uint32_t id = encoder.find(piece, h);
      if (id != BytesTable::kMissing) {
        out.push_back(id);
        return;
      }
    }
    if (piece.size() == 1) {
      out.push_back(byte_token[static_cast<unsigned char>(piece[0])]);
      return;
    }
    if (cache.lookup(piece, h, out)) return;
    const size_t before = out.size();
    merge_piece(piece, out);
    cache.store(piece, h, out.data() + before, out.size() - before);
  };
  size_t pos = 0, start = 0, end = 0;
  while (pattern->next(text, pos, start, end)) {
    if (keep_gaps && start > pos) encode_piece(text.substr(pos, start - pos));
    encode_piece(text.substr(start, end - start));
    pos = end;
  }
  if (keep_gaps && pos < text.size()) encode_piece(text.substr(pos));
}

std::string_view TokenizerImpl::bytes_of(int64_t id) const {
  if (is_ordinary(id)) return ordinary_bytes(id);
  const auto it = special_by_id.find(id);
  if (it == special_by_id.end())
    throw TokenIdError("tokenizer: token id " + std::to_string(id) +
                           " is not in the vocabulary of '" + name + "' (ids are 0.." +
                           std::to_string(max_token_value) + ")",
                       id);
  return it->second;
}

// ---- building ---------------------------------------------------------------------------------

void TokenizerImpl::add_tokens(const std::vector<std::pair<std::string, int64_t>>& tokens,
                               const std::function<std::string(size_t)>& where) {
  int64_t max_id = -1;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto& [bytes, id] = tokens[i];
    if (id < 0 || id >= (int64_t(1) << 31))
      throw TokenizerError(where(i) + ": token id " + std::to_string(id) +
                           " is out of range (expected 0 <= id < 2^31)");
    if (bytes.empty())
      throw TokenizerError(where(i) + ": empty token (id " + std::to_string(id) + ")");
    max_id = std::max(max_id, id);
  }
  // Ids index a table: refuse vocabularies so sparse that it would dwarf them.
  if (max_id >= 2 * int64_t(tokens.size()) + 65536)
    throw TokenizerError(where(tokens.size()) + ": the largest token id (" +
                         std::to_string(max_id) + ") is far above the number of tokens (" +
                         std::to_string(tokens.size()) + "); ids must be nearly dense");
  offset.assign(size_t(max_id + 1), 0);
  length.assign(size_t(max_id + 1), kNoToken);
  std::vector<size_t> first_with_id(size_t(max_id + 1), SIZE_MAX);
  encoder.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto& [bytes, id] = tokens[i];
    if (first_with_id[size_t(id)] != SIZE_MAX)
      throw TokenizerError(where(i) + ": duplicate id " + std::to_string(id) + " (also " +
                           where(first_with_id[size_t(id)]) + ")");
    first_with_id[size_t(id)] = i;
    if (!encoder.insert(bytes, uint32_t(id))) {
      const uint32_t other = encoder.find(bytes);
      throw TokenizerError(where(i) + ": duplicate token (id " + std::to_string(id) +
                           " has the same bytes as id " + std::to_string(other) + ", " +
                           where(first_with_id[other]) + ")");
    }
    offset[size_t(id)] = uint32_t(arena.size());
    length[size_t(id)] = uint32_t(bytes.size());
    arena += bytes;
  }
}

void TokenizerImpl::add_rank_merges() {
  merges.reserve(encoder.size() * 2);
  for (size_t id = 0; id < length.size(); ++id) {
    if (length[id] == kNoToken || length[id] < 2) continue;
    const std::string_view t = ordinary_bytes(int64_t(id));
    for (size_t k = 1; k < t.size(); ++k) {
      const uint32_t l = encoder.find(t.substr(0, k));
      if (l == BytesTable::kMissing) continue;
      const uint32_t r = encoder.find(t.substr(k));
      if (r == BytesTable::kMissing) continue;
      merges.insert(l, r, {uint32_t(id), uint32_t(id)});
    }
  }
}

void TokenizerImpl::finish(const std::map<std::string, int64_t>& specials,
                           const std::string& pattern_str, const std::string& encoding_name,
                           const std::string& source) {
  name = encoding_name;
  pat_str = pattern_str;
  for (int b = 0; b < 256; ++b) {
    const char c = char(b);
    const uint32_t id = encoder.find(std::string_view(&c, 1));
    if (id == BytesTable::kMissing) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02X", b);
      throw TokenizerError(source + ": no token for the byte " + hex +
                           " (a byte-level BPE needs every single byte as a token)");
    }
    byte_token[size_t(b)] = id;
  }
  max_token_value = int64_t(length.size()) - 1;
  for (const auto& [token, id] : specials) {
    if (token.empty()) throw TokenizerError(source + ": a special token is the empty string");
    if (id < 0 || id >= (int64_t(1) << 31))
      throw TokenizerError(source + ": special token '" + token + "' has id " + std::to_string(id) +
                           " (expected 0 <= id < 2^31)");
    if (is_ordinary(id))
      throw TokenizerError(source + ": special token '" + token + "' has id " + std::to_string(id) +
                           ", which is the ordinary token '" + std::string(ordinary_bytes(id)) +
                           "'");
    if (!special_by_id.emplace(id, token).second)
      throw TokenizerError(source + ": special tokens '" + special_by_id[id] + "' and '" + token +
                           "' share the id " + std::to_string(id));
    max_token_value = std::max(max_token_value, id);
  }
  special_tokens = specials;
  pattern = std::make_unique<Pattern>(pattern_str, source);
}

}  // namespace detail

// ---- the public API ---------------------------------------------------------------------------

using detail::TokenizerImpl;

std::string utf8_replace_invalid(std::string_view bytes) {
  size_t i = detail::first_invalid_utf8(bytes);
  if (i == std::string_view::npos) return std::string(bytes);
  std::string out(bytes.substr(0, i));
  out.reserve(bytes.size() + 16);
  while (i < bytes.size()) {
    size_t bad = 0;
    const size_t n = detail::utf8_sequence(bytes, i, bad);
    if (n > 0) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += bad;
    }
  }
  return out;
}

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerImpl> impl) : impl_(std::move(impl)) {}

namespace {

// `text`, or a repaired copy of it in `storage` when it is not valid UTF-8.
std::string_view valid_utf8(std::string_view text, std::string& storage) {
  if (detail::first_invalid_utf8(text) == std::string_view::npos) return text;
  storage = utf8_replace_invalid(text);
  return storage;
}

}  // namespace

std::vector<int64_t> Tokenizer::encode_ordinary(std::string_view text) const {
  std::string storage;
  const std::string_view valid = valid_utf8(text, storage);
  std::vector<int64_t> out;
  out.reserve(valid.size() / 4 + 8);
  impl_->encode_ordinary(valid, out);
  return out;
}

std::vector<int64_t> Tokenizer::encode(std::string_view text,
                                       const SpecialTokenSet& allowed_special,
                                       const SpecialTokenSet& disallowed_special) const {
  const TokenizerImpl& impl = *impl_;
  std::string storage;
  const std::string_view valid = valid_utf8(text, storage);

  // The special tokens that become ids: the allowed ones that are special tokens.
  std::vector<std::pair<std::string_view, int64_t>> allowed;
  for (const auto& [token, id] : impl.special_tokens)
    if (allowed_special.is_all || allowed_special.tokens.count(token))
      allowed.emplace_back(token, id);

  // tiktoken raises for the first disallowed string (by default: every special token not
  // allowed) found anywhere in the text.
  std::vector<std::string_view> disallowed;
  if (disallowed_special.is_all) {
    for (const auto& [token, id] : impl.special_tokens)
      if (!(allowed_special.is_all || allowed_special.tokens.count(token)))
        disallowed.push_back(token);
  } else {
    for (const auto& token : disallowed_special.tokens)
      if (!token.empty()) disallowed.push_back(token);
  }
  size_t first = std::string_view::npos;
  std::string_view offending;
  for (std::string_view token : disallowed) {
    const size_t at = valid.find(token);
    if (at < first || (at == first && token.size() > offending.size())) {
      first = at;
      offending = token;
    }
  }
  if (first != std::string_view::npos) {
    const std::string t(offending);
    throw TokenizerError(
        "Encountered text corresponding to disallowed special token '" + t +
        "'.\nIf you want this text to be encoded as a special token, pass it to `allowed_special`, "
        "e.g. `allowed_special={'" +
        t +
        "', ...}`.\nIf you want this text to be encoded as normal text, disable the check for "
        "this token by passing `disallowed_special=(enc.special_tokens_set - {'" +
        t + "'})`.\nTo disable this check for all special tokens, pass `disallowed_special=()`.\n");
  }

  std::vector<int64_t> out;
  out.reserve(valid.size() / 4 + 8);
  // The next occurrence of each allowed special token at or after `start` (npos: none left).
  std::vector<size_t> next_at(allowed.size());
  for (size_t k = 0; k < allowed.size(); ++k) next_at[k] = valid.find(allowed[k].first);
  size_t start = 0;
  while (true) {
    size_t best = std::string_view::npos, which = 0;
    for (size_t k = 0; k < allowed.size(); ++k) {
      if (next_at[k] != std::string_view::npos && next_at[k] < start)
        next_at[k] = valid.find(allowed[k].first, start);
      const size_t at = next_at[k];
      if (at < best || (at == best && at != std::string_view::npos &&
                        allowed[k].first.size() > allowed[which].first.size())) {
        best = at;
        which = k;
      }
    }
    impl.encode_ordinary(
        valid.substr(start, best == std::string_view::npos ? valid.npos : best - start), out);
    if (best == std::string_view::npos) break;
    out.push_back(allowed[which].second);
    start = best + allowed[which].first.size();
  }
  return out;
}

int64_t Tokenizer::encode_single_token(std::string_view token_bytes) const {
  const uint32_t id = impl_->encoder.find(token_bytes);
  if (id != detail::BytesTable::kMissing) return id;
  const auto it = impl_->special_tokens.find(std::string(token_bytes));
  if (it != impl_->special_tokens.end()) return it->second;
  throw TokenizerError("encode_single_token: '" + std::string(token_bytes) +
                       "' is not a token of '" + impl_->name + "'");
}

std::string Tokenizer::decode_bytes(const std::vector<int64_t>& ids) const {
  const TokenizerImpl& impl = *impl_;
  size_t total = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i];
    if (impl.is_ordinary(id)) {
      total += impl.length[size_t(id)];
    } else if (impl.special_by_id.count(id)) {
      total += impl.special_by_id.at(id).size();
    } else {
      throw TokenIdError("decode: token id " + std::to_string(id) + " (at position " +
                             std::to_string(i) + ") is not in the vocabulary of '" + impl.name +
                             "' (ids are 0.." + std::to_string(impl.max_token_value) + ")",
                         id);
    }
  }
  std::string out;
  out.reserve(total);
  for (const int64_t id : ids) {
    if (impl.is_ordinary(id))
      out.append(impl.arena.data() + impl.offset[size_t(id)], impl.length[size_t(id)]);
    else
      out += impl.special_by_id.at(id);
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  return utf8_replace_invalid(decode_bytes(ids));
}

std::string Tokenizer::decode_single_token_bytes(int64_t id) const {
  return std::string(impl_->bytes_of(id));
}

int64_t Tokenizer::n_vocab() const { return impl_->max_token_value + 1; }
int64_t Tokenizer::max_token_value() const { return impl_->max_token_value; }
int64_t Tokenizer::eot_token() const {
  const auto it = impl_->special_tokens.find(std::string(kEndOfText));
  if (it == impl_->special_tokens.end())
    throw TokenizerError("eot_token: the encoding '" + impl_->name +
                         "' has no special token <|endoftext|>");
  return it->second;
}
const std::map<std::string, int64_t>& Tokenizer::special_tokens() const {
  return impl_->special_tokens;
}
std::set<std::string> Tokenizer::special_tokens_set() const {
  std::set<std::string> out;
  for (const auto& [token, id] : impl_->special_tokens) out.insert(token);
  return out;
}
const std::string& Tokenizer::name() const { return impl_->name; }
const std::string& Tokenizer::pat_str() const { return impl_->pat_str; }
bool Tokenizer::contains(int64_t id) const {
  return impl_->is_ordinary(id) || impl_->special_by_id.count(id) > 0;
}

}  // namespace dual_attention
