// encode_batch / decode_batch over LibTorch's intra-op threads (at::parallel_for), so that
// at::set_num_threads, torch.set_num_threads and the CLI's --threads apply. The one file of the
// tokenizer that includes ATen.
#include <ATen/Parallel.h>

#include "tokenizer_impl.h"

namespace dual_attention {

namespace {

// out[i] = f(i) for i in [0, n): at::parallel_for gives each thread one contiguous run of items.
template <class T, class F>
std::vector<T> parallel_map(size_t n, F&& f) {
  std::vector<T> out(n);
  at::parallel_for(0, int64_t(n), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[size_t(i)] = f(size_t(i));
  });
  return out;
}

}  // namespace

std::vector<std::vector<int64_t>> Tokenizer::encode_ordinary_batch(
    const std::vector<std::string>& texts) const {
  return parallel_map<std::vector<int64_t>>(texts.size(),
                                            [&](size_t i) { return encode_ordinary(texts[i]); });
}

std::vector<std::vector<int64_t>> Tokenizer::encode_batch(
    const std::vector<std::string>& texts, const SpecialTokenSet& allowed_special,
    const SpecialTokenSet& disallowed_special) const {
  return parallel_map<std::vector<int64_t>>(texts.size(), [&](size_t i) {
    return encode(texts[i], allowed_special, disallowed_special);
  });
}

std::vector<std::string> Tokenizer::decode_batch(
    const std::vector<std::vector<int64_t>>& batch) const {
  return parallel_map<std::string>(batch.size(), [&](size_t i) { return decode(batch[i]); });
}

std::vector<std::string> Tokenizer::decode_bytes_batch(
    const std::vector<std::vector<int64_t>>& batch) const {
  return parallel_map<std::string>(batch.size(), [&](size_t i) { return decode_bytes(batch[i]); });
}

}  // namespace dual_attention
