// encode_batch / decode_batch over LibTorch's intra-op threads (at::parallel_for), so that
// at::set_num_threads, torch.set_num_threads and the CLI's --threads apply. The one file of the
// tokenizer that includes ATen.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#include "tokenizer_impl.h"

namespace dual_attention {

namespace {

// out[i] = f(i) for i in [0, n), the items handed out one at a time to whichever thread is free:
// documents differ in length by orders of magnitude, so contiguous runs per thread
// (at::parallel_for over the items) leave one thread working alone on the long ones.
template <class T, class F>
std::vector<T> parallel_map(size_t n, F&& f) {
  std::vector<T> out(n);
  std::atomic<size_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), int64_t(n));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (size_t i = next++; i < n; i = next++) out[i] = f(i);
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
