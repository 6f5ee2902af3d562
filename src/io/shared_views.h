// When two names hold one tensor: the same bytes seen the same way (storage, offset, sizes,
// strides, dtype, device). Tied weights registered twice, or tied with set_, both qualify; a slice
// or a reshaped view of another tensor does not.
#pragma once

#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

namespace dual_attention::io::detail {

using ViewKey = std::tuple<const void*, int64_t, std::vector<int64_t>, std::vector<int64_t>,
                           torch::ScalarType, std::string>;

// Only meaningful for tensors with at least one element (empty tensors share no bytes).
inline ViewKey view_key(const torch::Tensor& t) {
  return {t.storage().data(), t.storage_offset(), t.sizes().vec(),
          t.strides().vec(),  t.scalar_type(),    t.device().str()};
}

}  // namespace dual_attention::io::detail
