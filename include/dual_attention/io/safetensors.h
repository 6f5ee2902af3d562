// The safetensors checkpoint format (https://github.com/huggingface/safetensors), read and written
// without Python:
//
//   [8 bytes: header length n, little-endian u64][n bytes: JSON header][data section]
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data section) plus an optional "__metadata__" object of string -> string. All n
// bytes of the header are parsed: only JSON whitespace may surround the object (no NUL, no
// trailing characters), as the safetensors library requires, and nesting is at most 128 deep. Data
// is little-endian, C-contiguous, and the tensors tile the data section exactly: no overlaps, no
// holes, no trailing bytes (what the reference Rust implementation enforces).
//
// Shared tensors are stored once. safetensors.torch.save_model drops the duplicates and records
// each dropped name in __metadata__ as dropped_name -> kept_name; readers here resolve such aliases
// (see LoadOptions::resolve_aliases) and save_safetensors writes them the same way.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dual_attention::io {

using Metadata = std::map<std::string, std::string>;
// Tensors in a chosen order, as a state_dict lists them. Names may repeat a tensor (tied weights).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// One header entry.
struct TensorInfo {
  std::string dtype;  // as written in the file: "F32", "BF16", "I64", ...
  torch::ScalarType scalar_type;
  std::vector<int64_t> shape;
  // data_offsets: the tensor's bytes are [data_begin, data_end) of the data section.
  uint64_t data_begin = 0;
  uint64_t data_end = 0;
};

struct LoadOptions {
  // false: each tensor owns a copy of its bytes. true: tensors are views into the file mapping,
  // which stays alive (and the file open) as long as any of them does; writing to a view changes
  // only this process's copy-on-write page, never the file. A view whose bytes are not aligned for
  // its dtype (possible only in files not written by safetensors) is returned as a copy instead.
  TORCH_ARG(bool, zero_copy) = false;
  // A name absent from the header but present in __metadata__ as name -> stored_name (the way
  // save_model records a dropped shared tensor) yields the stored tensor.
  TORCH_ARG(bool, resolve_aliases) = true;
};

namespace detail {
struct Bytes;
}

// A validated, memory-mapped (read-only, MAP_PRIVATE) safetensors file, or a safetensors file held
// in memory. Copies share the bytes.
class SafetensorsFile {
 public:
  // Maps and validates the whole header; a malformed file raises c10::Error naming the file and
  // the problem.
  static SafetensorsFile open(const std::string& path);
  // The same checks on a file's bytes held in memory (as safetensors.torch.load(bytes)); `name`
  // stands for the path in error messages. The bytes are moved in and owned.
  static SafetensorsFile from_bytes(std::string bytes, const std::string& name = "<bytes>");

  const std::string& path() const { return path_; }
  // Names of the stored tensors, sorted (aliases not included).
  std::vector<std::string> keys() const;
  bool contains(const std::string& name) const { return infos_.count(name) > 0; }
  const Metadata& metadata() const { return metadata_; }
  // Header entry of a stored tensor.
  const TensorInfo& info(const std::string& name) const;
  // The __metadata__ entries that are aliases: dropped_name -> kept_name where kept_name is stored
  // and dropped_name is not. Other entries ("format": "pt", ...) are plain metadata.
  std::map<std::string, std::string> aliases() const;
  // The stored name behind `name`: itself if stored, else its alias target when resolve_aliases.
  // Raises for an unknown name, and for an alias whose target is not stored.
  std::string resolve(const std::string& name, bool resolve_aliases = true) const;

  torch::Tensor get(const std::string& name, const LoadOptions& options = {}) const;
  // Every stored tensor, plus every alias when resolve_aliases (an alias is the very same tensor
  // object as its target, so tied weights stay tied).
  std::map<std::string, torch::Tensor> tensors(const LoadOptions& options = {}) const;

 private:
  SafetensorsFile() = default;
  static SafetensorsFile parse(std::shared_ptr<detail::Bytes> file, const std::string& path);
  torch::Tensor read(const std::string& stored_name, bool zero_copy) const;

  std::string path_;
  std::shared_ptr<detail::Bytes> file_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::map<std::string, TensorInfo> infos_;
  Metadata metadata_;
};

struct LoadedSafetensors {
  std::map<std::string, torch::Tensor> tensors;
  Metadata metadata;
};

// Reads a whole file: SafetensorsFile::open(path).tensors(options) plus its metadata.
LoadedSafetensors load_safetensors(const std::string& path, const LoadOptions& options = {});

// Writes a safetensors file byte-for-byte as safetensors' Python writer does (entries ordered by
// descending dtype alignment, then name; header padded with spaces to a multiple of 8), except that
// __metadata__ keys are written sorted where Python's order is a hash map's. Tensors may be
// non-contiguous or on any device; they are written as contiguous CPU little-endian bytes. Names
// that are the same view of the same storage (tied weights) are written once under the
// lexicographically first name, and each other name is recorded in __metadata__ as
// other -> first unless `metadata` already has that key (the rule of safetensors.torch.save_model).
// The file is written to a temporary file in the same directory and renamed over `path`.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const Metadata& metadata = {});
// The same from a map (std::map, std::unordered_map, ...) of name -> tensor. A braced list
// {{"name", tensor}, ...} calls the overload above.
template <class Map,
          class = std::enable_if_t<std::is_same_v<typename Map::mapped_type, torch::Tensor>>>
void save_safetensors(const std::string& path, const Map& tensors, const Metadata& metadata = {}) {
  save_safetensors(path, NamedTensors(tensors.begin(), tensors.end()), metadata);
}

// "F32" for torch::kFloat32, ...; raises for a dtype safetensors files here cannot hold. Every
// dtype both safetensors and torch have is held: BOOL, U8, I8, F8_E5M2, F8_E4M3 (float8_e4m3fn),
// F8_E8M0 (float8_e8m0fnu), F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32,
// C64 (complex64), F64, I64, U64. The packed sub-byte floats F4, F6_E2M3 and F6_E3M2 are refused
// with an error saying so.
std::string safetensors_dtype(torch::ScalarType scalar_type);

}  // namespace dual_attention::io
