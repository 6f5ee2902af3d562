// The hash tables behind the tokenizer: byte strings -> id, id pairs -> merge, and the piece cache.
#include <cstring>

#include "tokenizer_impl.h"

namespace dual_attention::detail {

namespace {
inline uint64_t load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t mix64(uint64_t h) {
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ULL;
  h ^= h >> 32;
  return h;
}

// The slots of an open-addressing table for n entries, kept at most half full: a power of two
// (the index is hash & (capacity - 1)), at least 16.
size_t capacity_for(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  return cap;
}
}  // namespace

uint64_t hash_bytes(std::string_view bytes) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0xff51afd7ed558ccdULL);
  for (; n >= 8; n -= 8, p += 8) h = (h ^ load64(p)) * 0xbf58476d1ce4e5b9ULL + (h >> 29);
  if (n > 0) {
    uint64_t tail = 0;
    std::memcpy(&tail, p, n);
    h = (h ^ tail) * 0x94d049bb133111ebULL + (h >> 31);
  }
  return mix64(h);
}

// ---- BytesTable ---------------------------------------------------------------------------------
void BytesTable::reserve(size_t n) {
  const size_t cap = capacity_for(n);
  if (cap <= slots_.size()) return;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(cap, Slot{});
  for (const Slot& s : old) {
    if (s.value == kMissing) continue;
    for (size_t i = s.hash & (cap - 1);; i = (i + 1) & (cap - 1))
      if (slots_[i].value == kMissing) {
        slots_[i] = s;
        break;
      }
  }
}

void BytesTable::grow() { reserve(slots_.empty() ? 8 : slots_.size()); }

bool BytesTable::insert(std::string_view key, uint32_t value, uint64_t h) {
  if (2 * (size_ + 1) > slots_.size()) grow();
  const size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.value == kMissing) {
      s.hash = h;
      s.offset = uint32_t(arena_.size());
      s.length = uint32_t(key.size());
      s.value = value;
      arena_.append(key);
      ++size_;
      return true;
    }
    if (s.hash == h && s.length == key.size() &&
        std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
      return false;
  }
}

uint32_t BytesTable::find(std::string_view key, uint64_t h) const {
  if (slots_.empty()) return kMissing;
  const size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.value == kMissing) return kMissing;
    if (s.hash == h && s.length == key.size() &&
        std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
      return s.value;
  }
}

void BytesTable::clear() {
  slots_.assign(slots_.size(), Slot{});
  arena_.clear();
  size_ = 0;
}

// ---- PairTable ----------------------------------------------------------------------------------
void PairTable::reserve(size_t n) {
  const size_t cap = capacity_for(n);
  if (cap <= slots_.size()) return;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  for (const Slot& s : old) {
    if (s.key == kEmpty) continue;
    for (size_t i = mix(s.key) & mask_;; i = (i + 1) & mask_)
      if (slots_[i].key == kEmpty) {
        slots_[i] = s;
        break;
      }
  }
}

void PairTable::grow() { reserve(slots_.empty() ? 8 : slots_.size()); }

void PairTable::insert(uint32_t left, uint32_t right, Merge merge) {
  if (2 * (size_ + 1) > slots_.size()) grow();
  const uint64_t key = (uint64_t(left) << 32) | right;
  for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == kEmpty) {
      s.key = key;
      s.merge = merge;
      ++size_;
      return;
    }
    if (s.key == key) {
      if (merge.priority < s.merge.priority) s.merge = merge;
      return;
    }
  }
}

// ---- PieceCache ---------------------------------------------------------------------------------
bool PieceCache::lookup(std::string_view piece, uint64_t hash, std::vector<int64_t>& out) const {
  Shard& shard = shards_[hash >> 60];
  std::lock_guard<std::mutex> lock(shard.mutex);
  const uint32_t at = shard.index.find(piece, hash);
  if (at == BytesTable::kMissing) return false;
  const uint64_t span = shard.spans[at];
  const uint32_t* ids = shard.ids.data() + (span >> 32);
  out.insert(out.end(), ids, ids + uint32_t(span));
  return true;
}

void PieceCache::store(std::string_view piece, uint64_t hash, const int64_t* ids, size_t n) const {
  Shard& shard = shards_[hash >> 60];
  std::lock_guard<std::mutex> lock(shard.mutex);
  if (shard.index.arena_bytes() + 4 * shard.ids.size() > kMaxArenaBytes) {
    shard.index.clear();
    shard.spans.clear();
    shard.ids.clear();
  }
  if (!shard.index.insert(piece, uint32_t(shard.spans.size()), hash)) return;  // another thread did
  shard.spans.push_back((uint64_t(shard.ids.size()) << 32) | n);
  for (size_t i = 0; i < n; ++i) shard.ids.push_back(uint32_t(ids[i]));
}

}  // namespace dual_attention::detail
