#include "dual_attention/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "shared_views.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O assumes a little-endian host (the format is little-endian)"
#endif

namespace dual_attention::io {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit

// Every dtype that both safetensors (0.8) and torch have. `rank` is the position in the Rust
// implementation's Dtype enum, which orders entries in a written file (descending rank, then name);
// the ranks were read off a file safetensors wrote with one tensor of each dtype.
struct DtypeEntry {
  const char* name;
  torch::ScalarType scalar_type;
  uint64_t size;
  int rank;
};
constexpr DtypeEntry kDtypes[] = {
    {"BOOL", torch::kBool, 1, 0},
    {"U8", torch::kUInt8, 1, 4},
    {"I8", torch::kInt8, 1, 5},
    {"F8_E5M2", torch::kFloat8_e5m2, 1, 6},
    {"F8_E4M3", torch::kFloat8_e4m3fn, 1, 7},
    {"F8_E8M0", torch::kFloat8_e8m0fnu, 1, 8},
    {"F8_E4M3FNUZ", torch::kFloat8_e4m3fnuz, 1, 9},
    {"F8_E5M2FNUZ", torch::kFloat8_e5m2fnuz, 1, 10},
    {"I16", torch::kInt16, 2, 11},
    {"U16", torch::kUInt16, 2, 12},
    {"F16", torch::kFloat16, 2, 13},
    {"BF16", torch::kBFloat16, 2, 14},
    {"I32", torch::kInt32, 4, 15},
    {"U32", torch::kUInt32, 4, 16},
    {"F32", torch::kFloat32, 4, 17},
    {"C64", torch::kComplexFloat, 8, 18},
    {"F64", torch::kFloat64, 8, 19},
    {"I64", torch::kInt64, 8, 20},
    {"U64", torch::kUInt64, 8, 21},
};
// safetensors dtypes with no torch dtype of the same layout: sub-byte floats, which safetensors
// packs with a shape counted in elements (torch.float4_e2m1fn_x2 holds two per byte).
constexpr const char* kSubByteDtypes[] = {"F4", "F6_E2M3", "F6_E3M2"};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeEntry* find_dtype(torch::ScalarType scalar_type) {
  for (const auto& d : kDtypes)
    if (d.scalar_type == scalar_type) return &d;
  return nullptr;
}

std::string known_dtypes() {
  std::string s;
  for (const auto& d : kDtypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

std::string known_scalar_types() {
  std::ostringstream s;
  for (const auto& d : kDtypes) s << (s.tellp() ? ", " : "") << d.scalar_type;
  return s.str();
}

// Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF), as Rust's from_utf8.
// Returns the offset of the first invalid byte, or size when valid.
size_t first_invalid_utf8(const uint8_t* s, size_t size) {
  size_t i = 0;
  while (i < size) {
    const uint8_t c = s[i];
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (size - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if ((s[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return size;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

namespace detail {

// The bytes of a safetensors file, alive as long as a tensor viewing them. Views may write to them
// without touching any file.
struct Bytes {
  uint8_t* data = nullptr;
  size_t size = 0;
  virtual ~Bytes() = default;
};

namespace {

// A whole file mapped copy-on-write (MAP_PRIVATE): readable, and writable by views.
struct MappedFile : Bytes {
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    TORCH_CHECK(fd >= 0, "safetensors file '", path, "': cannot open: ", errno_text());
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      const std::string why = S_ISDIR(st.st_mode) ? "is a directory" : "is not a regular file";
      ::close(fd);
      TORCH_CHECK(false, "safetensors file '", path, "': ", why);
    }
    size = static_cast<size_t>(st.st_size);
    if (size == 0) {  // mmap refuses a length of 0; open() reports the short file
      ::close(fd);
      return;
    }
    void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    const std::string why = errno_text();
    ::close(fd);  // the mapping keeps the file alive
    TORCH_CHECK(addr != MAP_FAILED, "safetensors file '", path, "': cannot map ", size,
                " bytes: ", why);
    data = static_cast<uint8_t*>(addr);
  }
  ~MappedFile() override {
    if (data) ::munmap(data, size);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
};

// Bytes held in memory. Their own copy, so that views never alias the caller's buffer.
struct OwnedBytes : Bytes {
  explicit OwnedBytes(std::string bytes) : buffer(std::move(bytes)) {
    data = reinterpret_cast<uint8_t*>(buffer.data());
    size = buffer.size();
  }
  std::string buffer;
};

}  // namespace
}  // namespace detail

// ---- reading ---------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  return parse(std::make_shared<detail::MappedFile>(path), path);
}

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, const std::string& name) {
  return parse(std::make_shared<detail::OwnedBytes>(std::move(bytes)), name);
}

SafetensorsFile SafetensorsFile::parse(std::shared_ptr<detail::Bytes> file,
                                       const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = std::move(file);
  const uint8_t* bytes = f.file_->data;
  const uint64_t file_size = f.file_->size;
  const std::string where = "safetensors file '" + path + "': ";
  TORCH_CHECK(file_size >= 8, where, "file is ", file_size,
              " bytes long, shorter than the 8-byte header length");

  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian host
  TORCH_CHECK(header_len <= kMaxHeaderBytes, where, "header length ", header_len,
              " exceeds the 100000000-byte limit");
  TORCH_CHECK(header_len <= file_size - 8, where, "header length ", header_len,
              " runs past the end of the file (", file_size - 8, " bytes follow the length)");
  const uint8_t* header = bytes + 8;
  const size_t bad = first_invalid_utf8(header, header_len);
  TORCH_CHECK(bad == header_len, where, "header is not valid UTF-8 (bad byte at header offset ",
              bad, ")");
  // JSON text never holds a raw NUL (not in strings, not between tokens), but the JSON parser
  // takes one for the end of its input: without this check, a header "{...}\0junk" would parse
  // as "{...}" and ignore the rest of its stated length. Every other stray byte is a parse error.
  const auto* nul = static_cast<const uint8_t*>(std::memchr(header, 0, header_len));
  TORCH_CHECK(nul == nullptr, where, "header has a NUL byte at header offset ", nul - header,
              " of ", header_len, "; only whitespace may surround the JSON object");

  // Duplicate top-level keys would silently replace each other in the parsed object. Nesting is
  // limited as serde_json limits it (128): a valid header is 3 deep, and error messages print
  // values recursively.
  constexpr int kMaxDepth = 128;
  std::string duplicate;
  std::set<std::string> seen;
  bool too_deep = false;
  nlohmann::json::parser_callback_t check = [&](int depth, nlohmann::json::parse_event_t event,
                                                nlohmann::json& parsed) {
    if (depth > kMaxDepth) too_deep = true;
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && parsed.is_string() &&
        !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return !too_deep;  // discards everything once too deep
  };
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(header, header + header_len, check);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, where, "header is not valid JSON: ", e.what());
  }
  TORCH_CHECK(!too_deep, where, "header nests JSON values more than ", kMaxDepth, " deep");
  TORCH_CHECK(root.is_object(), where, "header must be a JSON object, got ", root.type_name());
  TORCH_CHECK(duplicate.empty(), where, "header names '", duplicate, "' more than once");

  const uint64_t data_len = file_size - 8 - header_len;
  f.data_start_ = 8 + header_len;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;
      TORCH_CHECK(entry.is_object(), where, "__metadata__ must be an object of strings, got ",
                  entry.type_name());
      for (const auto& [key, value] : entry.items()) {
        TORCH_CHECK(value.is_string(), where, "__metadata__ entry '", key,
                    "' must be a string, got ", value.dump());
        f.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string what = where + "tensor '" + name + "': ";
    TORCH_CHECK(entry.is_object(), what, "entry must be an object, got ", entry.dump());
    for (const char* field : {"dtype", "shape", "data_offsets"})
      TORCH_CHECK(entry.contains(field), what, "entry has no '", field, "'");

    TensorInfo info;
    const auto& dtype = entry["dtype"];
    TORCH_CHECK(dtype.is_string(), what, "dtype must be a string, got ", dtype.dump());
    info.dtype = dtype.get<std::string>();
    const DtypeEntry* d = find_dtype(info.dtype);
    for (const char* sub_byte : kSubByteDtypes)
      TORCH_CHECK(info.dtype != sub_byte, what, "dtype '", info.dtype,
                  "' (a packed sub-byte float) has no torch dtype to load it as (expected one of ",
                  known_dtypes(), ")");
    TORCH_CHECK(d != nullptr, what, "unknown dtype '", info.dtype, "' (expected one of ",
                known_dtypes(), ")");
    info.scalar_type = d->scalar_type;

    const auto& shape = entry["shape"];
    TORCH_CHECK(shape.is_array(), what, "shape must be a list, got ", shape.dump());
    uint64_t numel = 1;
    bool overflow = false, zero_dim = false;
    for (const auto& dim : shape) {
      TORCH_CHECK(dim.is_number_integer(), what, "shape ", shape.dump(),
                  " must hold integers, got ", dim.dump());
      TORCH_CHECK(dim.is_number_unsigned(), what, "shape ", shape.dump(),
                  " has a negative dimension");
      const uint64_t n = dim.get<uint64_t>();
      TORCH_CHECK(n <= static_cast<uint64_t>(INT64_MAX), what, "shape ", shape.dump(),
                  " has a dimension above 2^63 - 1");
      overflow |= __builtin_mul_overflow(numel, n, &numel);
      zero_dim |= n == 0;
      info.shape.push_back(static_cast<int64_t>(n));
    }
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, d->size, &nbytes);
    // A zero dimension makes the tensor empty (numel and nbytes 0), whatever overflowed on the way.
    if (zero_dim) overflow = false;
    TORCH_CHECK(!overflow, what, "shape ", shape.dump(), " of dtype ", info.dtype,
                " overflows 64 bits when computing its size");

    const auto& offsets = entry["data_offsets"];
    TORCH_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                    offsets[1].is_number_unsigned(),
                what, "data_offsets must be two non-negative integers [begin, end], got ",
                offsets.dump());
    info.data_begin = offsets[0].get<uint64_t>();
    info.data_end = offsets[1].get<uint64_t>();
    TORCH_CHECK(info.data_begin <= info.data_end, what, "data_offsets ", offsets.dump(),
                " begin after they end");
    TORCH_CHECK(info.data_end - info.data_begin == nbytes, what, "data_offsets ", offsets.dump(),
                " span ", info.data_end - info.data_begin, " bytes but dtype ", info.dtype,
                " and shape ", shape.dump(), " need ", nbytes);
    TORCH_CHECK(info.data_end <= data_len, what, "data_offsets ", offsets.dump(),
                " are out of range: the data section has ", data_len, " bytes");
    f.infos_.emplace(name, std::move(info));
  }

  // The tensors must tile the data section: sorted by offsets, each begins where the last ended.
  std::vector<const std::pair<const std::string, TensorInfo>*> by_offset;
  for (const auto& entry : f.infos_) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return std::tie(a->second.data_begin, a->second.data_end, a->first) <
           std::tie(b->second.data_begin, b->second.data_end, b->first);
  });
  uint64_t covered = 0;
  const std::string* last = nullptr;
  for (const auto* entry : by_offset) {
    const TensorInfo& info = entry->second;
    TORCH_CHECK(info.data_begin >= covered, where, "tensor '", entry->first, "' (bytes [",
                info.data_begin, ", ", info.data_end, ")) overlaps tensor '", *last,
                "' (which ends at byte ", covered, ")");
    TORCH_CHECK(info.data_begin == covered, where, "bytes [", covered, ", ", info.data_begin,
                ") of the data section belong to no tensor (a hole before tensor '", entry->first,
                "')");
    covered = info.data_end;
    last = &entry->first;
  }
  TORCH_CHECK(covered == data_len, where, "bytes [", covered, ", ", data_len,
              ") at the end of the data section belong to no tensor");
  return f;
}

std::vector<std::string> SafetensorsFile::keys() const {
  std::vector<std::string> names;
  for (const auto& entry : infos_) names.push_back(entry.first);
  return names;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  TORCH_CHECK(it != infos_.end(), "safetensors file '", path_, "': no tensor named '", name, "'");
  return it->second;
}

std::map<std::string, std::string> SafetensorsFile::aliases() const {
  std::map<std::string, std::string> result;
  for (const auto& [key, value] : metadata_)
    if (!contains(key) && contains(value)) result.emplace(key, value);
  return result;
}

std::string SafetensorsFile::resolve(const std::string& name, bool resolve_aliases) const {
  if (contains(name)) return name;
  auto alias = metadata_.find(name);
  if (resolve_aliases && alias != metadata_.end()) {
    TORCH_CHECK(contains(alias->second), "safetensors file '", path_, "': '", name,
                "' is an alias (in __metadata__) of tensor '", alias->second,
                "', which the file does not hold");
    return alias->second;
  }
  std::ostringstream known;
  size_t shown = 0;
  for (const auto& entry : infos_) {
    if (shown++ == 8) {
      known << ", ... (" << infos_.size() << " in all)";
      break;
    }
    known << (shown > 1 ? ", " : "") << entry.first;
  }
  TORCH_CHECK(false, "safetensors file '", path_, "': no tensor named '", name,
              "' (it holds: ", known.str(), ")");
}

torch::Tensor SafetensorsFile::read(const std::string& stored_name, bool zero_copy) const {
  const TensorInfo& info = infos_.at(stored_name);
  const auto options = torch::TensorOptions().dtype(info.scalar_type);
  const uint64_t nbytes = info.data_end - info.data_begin;
  if (nbytes == 0) return torch::empty(info.shape, options);
  // Offsets were validated against the mapping's size in open().
  uint8_t* bytes = file_->data + data_start_ + info.data_begin;
  const auto element_size = static_cast<uintptr_t>(torch::elementSize(info.scalar_type));
  if (zero_copy && reinterpret_cast<uintptr_t>(bytes) % element_size == 0) {
    auto keep_alive = file_;
    return torch::from_blob(
        bytes, info.shape, [keep_alive](void*) {}, options);
  }
  auto tensor = torch::empty(info.shape, options);
  std::memcpy(tensor.data_ptr(), bytes, nbytes);
  return tensor;
}

torch::Tensor SafetensorsFile::get(const std::string& name, const LoadOptions& options) const {
  return read(resolve(name, options.resolve_aliases()), options.zero_copy());
}

std::map<std::string, torch::Tensor> SafetensorsFile::tensors(const LoadOptions& options) const {
  std::map<std::string, torch::Tensor> result;
  for (const auto& entry : infos_)
    result.emplace(entry.first, read(entry.first, options.zero_copy()));
  if (options.resolve_aliases())
    for (const auto& [dropped, kept] : aliases()) result.emplace(dropped, result.at(kept));
  return result;
}

LoadedSafetensors load_safetensors(const std::string& path, const LoadOptions& options) {
  auto file = SafetensorsFile::open(path);
  return {file.tensors(options), file.metadata()};
}

// ---- writing ---------------------------------------------------------------------------------

std::string safetensors_dtype(torch::ScalarType scalar_type) {
  const DtypeEntry* d = find_dtype(scalar_type);
  TORCH_CHECK(d != nullptr, "safetensors: dtype ", scalar_type, " cannot be stored (expected ",
              known_scalar_types(), ")");
  return d->name;
}

namespace {

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min<size_t>(size, 1 << 30));
    if (n < 0 && errno == EINTR) continue;
    TORCH_CHECK(n > 0, "save_safetensors: writing '", path, "' failed: ", errno_text());
    p += n;
    size -= static_cast<size_t>(n);
  }
}

// A fresh file beside `path`, created with the usual permissions (0666 less the umask).
std::pair<int, std::string> create_temporary(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string name =
        path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
    const int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return {fd, name};
    TORCH_CHECK(errno == EEXIST, "save_safetensors: cannot create '", name, "': ", errno_text());
  }
  TORCH_CHECK(false, "save_safetensors: cannot create a temporary file beside '", path, "'");
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const Metadata& metadata) {
  struct Entry {
    std::string name;
    torch::Tensor tensor;
    const DtypeEntry* dtype;
  };
  std::vector<Entry> entries;
  std::set<std::string> names;
  std::map<detail::ViewKey, std::vector<std::string>> shared;  // same view -> its names
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK(names.insert(name).second, "save_safetensors: tensor name '", name,
                "' appears more than once");
    TORCH_CHECK(name != "__metadata__", "save_safetensors: '__metadata__' cannot name a tensor");
    TORCH_CHECK(tensor.defined(), "save_safetensors: tensor '", name, "' is undefined");
    TORCH_CHECK(tensor.layout() == torch::kStrided, "save_safetensors: tensor '", name,
                "' has layout ", tensor.layout(), "; only dense (strided) tensors can be saved");
    const DtypeEntry* dtype = find_dtype(tensor.scalar_type());
    TORCH_CHECK(dtype != nullptr, "save_safetensors: tensor '", name, "' has dtype ",
                tensor.scalar_type(), ", which cannot be stored (expected ", known_scalar_types(),
                ")");
    if (tensor.numel() > 0 && tensor.storage().nbytes() > 0)
      shared[detail::view_key(tensor)].push_back(name);
    entries.push_back({name, tensor, dtype});
  }

  // Keep the first name (byte order, as Python's sorted()) of each shared group.
  Metadata header_metadata = metadata;
  std::set<std::string> dropped;
  for (auto& [key, group] : shared) {
    std::sort(group.begin(), group.end());
    for (size_t i = 1; i < group.size(); ++i) {
      dropped.insert(group[i]);
      header_metadata.emplace(group[i], group[0]);  // never overrides the caller's metadata
    }
  }
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [&](const Entry& e) { return dropped.count(e.name) > 0; }),
                entries.end());
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.dtype->rank != b.dtype->rank ? a.dtype->rank > b.dtype->rank : a.name < b.name;
  });

  // The header as serde_json writes it: compact, __metadata__ first, then entries in data order.
  auto quote = [](const std::string& s) {
    try {
      return nlohmann::json(s).dump();
    } catch (const nlohmann::json::exception&) {
      TORCH_CHECK(false, "save_safetensors: '", s, "' is not valid UTF-8");
    }
  };
  std::string header = "{";
  if (!header_metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : header_metadata) {
      header += (first ? "" : ",") + quote(key) + ":" + quote(value);
      first = false;
    }
    header += "}";
  }
  std::vector<torch::Tensor> payload;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    auto bytes = e.tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(bytes.numel()) * e.dtype->size;
    header += (header.size() > 1 ? "," : "") + quote(e.name) + ":{\"dtype\":\"" + e.dtype->name +
              "\",\"shape\":" + nlohmann::json(bytes.sizes().vec()).dump() + ",\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
    payload.push_back(std::move(bytes));
  }
  header += "}";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  TORCH_CHECK(header.size() <= kMaxHeaderBytes, "save_safetensors: the header of '", path,
              "' would be ", header.size(), " bytes, above the 100000000-byte limit");

  auto [fd, temporary] = create_temporary(path);
  try {
    const uint64_t header_len = header.size();
    write_all(fd, &header_len, 8, temporary);
    write_all(fd, header.data(), header.size(), temporary);
    for (const auto& t : payload)
      if (t.numel() > 0) write_all(fd, t.data_ptr(), t.numel() * t.element_size(), temporary);
    TORCH_CHECK(::fsync(fd) == 0, "save_safetensors: fsync of '", temporary,
                "' failed: ", errno_text());
    TORCH_CHECK(::close(fd) == 0, "save_safetensors: closing '", temporary,
                "' failed: ", errno_text());
    fd = -1;
    TORCH_CHECK(::rename(temporary.c_str(), path.c_str()) == 0, "save_safetensors: cannot rename '",
                temporary, "' to '", path, "': ", errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(temporary.c_str());
    throw;
  }
}

}  // namespace dual_attention::io
