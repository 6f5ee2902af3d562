#include "dual_attention/io/torch_checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <cstring>
#include <fstream>
#include <tuple>
#include <unordered_map>

namespace dual_attention::io {

namespace {

// What kind of value the unpickler produced, for error messages.
std::string kind_of(const c10::IValue& v) { return v.tagKind(); }

}  // namespace

std::map<std::string, torch::Tensor> load_torch_state_dict(const std::string& path) {
  const std::string where = "torch checkpoint '" + path + "': ";

  // The zip signature first: a legacy torch.save file is a bare pickle stream (0x80 0x02 ...).
  char magic[4] = {};
  uint64_t file_size = 0;
  {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    TORCH_CHECK(in, where, "cannot open the file");
    file_size = static_cast<uint64_t>(in.tellg());
    in.seekg(0);
    in.read(magic, sizeof magic);
  }
  TORCH_CHECK(!(static_cast<uint8_t>(magic[0]) == 0x80 && magic[1] == 0x02), where,
              "this is the legacy (pre-1.6) torch.save format, which is not supported; load it in "
              "Python and save it again with torch.save or safetensors");
  TORCH_CHECK(file_size >= 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0, where,
              "not a torch.save zip archive (expected the zip signature 'PK\\x03\\x04' at byte 0)");

  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    // torch.save stores records uncompressed, so together they fit in the file; a record claiming
    // more (a compressed one, a zip bomb) is refused before anything is allocated for it.
    uint64_t claimed = 0;
    for (const auto& name : reader.getAllRecords()) {
      claimed += reader.getRecordSize(name);
      TORCH_CHECK(claimed <= file_size, where, "its records claim more bytes than the file's ",
                  file_size, " (record '", name, "'); torch.save writes uncompressed records");
    }
    TORCH_CHECK(reader.hasRecord("data.pkl"), where,
                "the archive has no data.pkl (expected a file written by torch.save)");

    at::DataPtr pickle;
    size_t pickle_size = 0;
    std::tie(pickle, pickle_size) = reader.getRecord("data.pkl");
    const char* pickle_bytes = static_cast<const char*>(pickle.get());
    size_t consumed = 0;
    auto read_pickle = [&](char* buffer, size_t n) -> size_t {
      n = std::min(n, pickle_size - consumed);
      std::memcpy(buffer, pickle_bytes + consumed, n);
      consumed += n;
      return n;
    };
    std::unordered_map<const void*, size_t> record_bytes;  // storage data -> its record's size
    auto read_record = [&](const std::string& key) {
      auto [data, size] = reader.getRecord("data/" + key);
      record_bytes[data.get()] = size;
      return std::move(data);
    };
    torch::jit::Unpickler unpickler(read_pickle, /*type_resolver=*/nullptr,
                                    /*obj_loader=*/nullptr, read_record,
                                    /*device=*/torch::Device(torch::kCPU));
    unpickler.set_version(reader.version());
    const c10::IValue root = unpickler.parse_ivalue();

    TORCH_CHECK(root.isGenericDict(), where,
                "expected a state dict (a dict of str -> tensor), got ", kind_of(root));
    std::map<std::string, torch::Tensor> state;
    for (const auto& item : root.toGenericDict()) {
      TORCH_CHECK(item.key().isString(), where,
                  "expected a state dict (a dict of str -> tensor), got a key of type ",
                  kind_of(item.key()));
      const std::string name = item.key().toStringRef();
      TORCH_CHECK(item.value().isTensor(), where, "entry '", name, "' is a ", kind_of(item.value()),
                  "; a state dict holds tensors only");
      torch::Tensor tensor = item.value().toTensor();
      TORCH_CHECK(
          tensor.layout() == torch::kStrided && tensor.device().is_cpu() && !tensor.is_quantized(),
          where, "entry '", name, "' is not a dense tensor");
      const auto& storage = tensor.storage();
      const size_t held = storage.nbytes() == 0 ? 0 : record_bytes[storage.data()];
      TORCH_CHECK(storage.nbytes() <= held, where, "entry '", name, "' claims a storage of ",
                  storage.nbytes(), " bytes but its record holds ", held);
      state.emplace(name, tensor);
    }
    return state;
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    if (message.rfind(where, 0) == 0) throw;
    TORCH_CHECK(false, where, "cannot read it as a torch.save archive of tensors: ", message);
  } catch (const std::exception& e) {  // LibTorch's reader also throws std::out_of_range, ...
    TORCH_CHECK(false, where, "cannot read it as a torch.save archive of tensors: ", e.what());
  }
}

}  // namespace dual_attention::io
