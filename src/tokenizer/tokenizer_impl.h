// The tokenizer's internals: the vocabulary tables, the PCRE2 pre-tokenizer, the BPE merge and the
// cache of merged pieces. Plain C++ (no torch), private to the library.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dual_attention/tokenizer.h"

namespace dual_attention::detail {

// A 64-bit hash of a byte string (8 bytes at a time; not cryptographic).
uint64_t hash_bytes(std::string_view bytes);

// Open addressing: byte strings (kept in the table's own arena) -> uint32_t.
class BytesTable {
 public:
  static constexpr uint32_t kMissing = UINT32_MAX;
  void reserve(size_t n);
  // Inserts `key` -> `value`; returns false (and changes nothing) if `key` is already there.
  bool insert(std::string_view key, uint32_t value, uint64_t hash);
  bool insert(std::string_view key, uint32_t value) { return insert(key, value, hash_bytes(key)); }
  // `hash`: hash_bytes(key), when the caller has it already.
  uint32_t find(std::string_view key, uint64_t hash) const;
  uint32_t find(std::string_view key) const { return find(key, hash_bytes(key)); }
  size_t size() const { return size_; }
  size_t arena_bytes() const { return arena_.size(); }
  void clear();

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0, length = 0, value = kMissing;
  };
  void grow();
  std::vector<Slot> slots_;  // size: a power of two, at most half full
  std::string arena_;
  size_t size_ = 0;
};

// Open addressing: a pair of token ids -> (merge priority, merged id).
class PairTable {
 public:
  struct Merge {
    uint32_t priority = UINT32_MAX, merged = UINT32_MAX;
  };
  void reserve(size_t n);
  // Keeps the entry of lower priority when the pair is there already.
  void insert(uint32_t left, uint32_t right, Merge merge);
  Merge find(uint32_t left, uint32_t right) const {
    if (slots_.empty()) return {};
    const uint64_t key = (uint64_t(left) << 32) | right;
    for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return s.merge;
      if (s.key == kEmpty) return {};
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = UINT64_MAX;
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
  }
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge;
  };
  void grow();
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

// A compiled pre-tokenizer pattern (PCRE2, UTF + UCP, JIT when available).
class Pattern {
 public:
  // `source` names the pattern's origin in errors.
  Pattern(const std::string& pat_str, const std::string& source);
  ~Pattern();
  Pattern(const Pattern&) = delete;
  Pattern& operator=(const Pattern&) = delete;
  // The first non-empty match in `text` (valid UTF-8) starting at or after byte `from`: its byte
  // range in [start, end). False when there is none.
  bool next(std::string_view text, size_t from, size_t& start, size_t& end) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// The merged pieces (byte strings that are not one token) seen so far, with their ids. Sharded
// by hash, each shard under its own mutex, so that threads encoding at once rarely wait.
class PieceCache {
 public:
  // Appends the cached ids of `piece` to `out`; false if it is not cached.
  bool lookup(std::string_view piece, uint64_t hash, std::vector<int64_t>& out) const;
  void store(std::string_view piece, uint64_t hash, const int64_t* ids, size_t n) const;

 private:
  static constexpr size_t kShards = 16;              // chosen by the hash's top 4 bits
  static constexpr size_t kMaxArenaBytes = 4 << 20;  // per shard; then it starts over
  struct Shard {
    std::mutex mutex;
    BytesTable index;             // piece -> position in `spans`
    std::vector<uint64_t> spans;  // (offset << 32 | count) into `ids`
    std::vector<uint32_t> ids;
  };
  mutable std::array<Shard, kShards> shards_;
};

struct TokenizerImpl {
  std::string name;
  std::string pat_str;
  std::unique_ptr<Pattern> pattern;

  // Ordinary tokens: id -> bytes (offset/length into `arena`; kNoToken: not a token).
  static constexpr uint32_t kNoToken = UINT32_MAX;
  std::string arena;
  std::vector<uint32_t> offset, length;
  BytesTable encoder;  // bytes -> id, ordinary tokens
  PairTable merges;    // (left id, right id) -> (priority, merged id)
  std::array<uint32_t, 256> byte_token{};
  // tiktoken: a piece that is one token becomes it without merging. Hugging Face's BPE merges
  // every word (its ignore_merges = false).
  bool direct_lookup = true;
  // Hugging Face's Split (behavior "Isolated") also keeps the text between matches as pieces;
  // tiktoken drops it. (GPT-2's pattern matches every character, so there it makes no difference.)
  bool keep_gaps = false;

  std::map<std::string, int64_t> special_tokens;
  std::map<int64_t, std::string> special_by_id;
  int64_t max_token_value = -1;

  PieceCache cache;

  // ---- building (the loaders) ----
  // Adds the ordinary tokens; errors name `where(i)` for the i-th token (duplicates, bad ids).
  void add_tokens(const std::vector<std::pair<std::string, int64_t>>& tokens,
                  const std::function<std::string(size_t)>& where);
  // tiktoken's merges: every token that is the concatenation of two tokens is their merge, with
  // its id as priority.
  void add_rank_merges();
  // Special tokens, the pattern, the single-byte tokens; checks that ids are unique.
  void finish(const std::map<std::string, int64_t>& specials, const std::string& pattern,
              const std::string& encoding_name, const std::string& source);

  // ---- using ----
  // Ordinary encoding of valid UTF-8 text, appended to `out`.
  void encode_ordinary(std::string_view valid_utf8, std::vector<int64_t>& out) const;
  // The BPE merge of one piece (at least two bytes), appended to `out`.
  void merge_piece(std::string_view piece, std::vector<int64_t>& out) const;
  bool is_ordinary(int64_t id) const {
    return id >= 0 && size_t(id) < length.size() && length[size_t(id)] != kNoToken;
  }
  std::string_view ordinary_bytes(int64_t id) const {
    return {arena.data() + offset[size_t(id)], length[size_t(id)]};
  }
  // The bytes of a token, ordinary or special; TokenIdError naming `id` otherwise.
  std::string_view bytes_of(int64_t id) const;
};

}  // namespace dual_attention::detail
