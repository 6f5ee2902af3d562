// SHA-256 (FIPS 180-4), to check LFS files against their sha256 etag while they stream in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dual_attention::hub::detail {

class Sha256 {
 public:
  Sha256() { reset(); }
  void reset();
  void update(const void* data, size_t size);
  std::string hex_digest();  // finishes the hash; call reset() before reusing

 private:
  void compress(const uint8_t* block);
  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes hashed so far
};

}  // namespace dual_attention::hub::detail
