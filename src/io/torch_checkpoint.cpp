#include "dual_attention/io/torch_checkpoint.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace dual_attention::io {

namespace {

// What kind of value the unpickler produced, for error messages.
std::string kind_of(const c10::IValue& v) { return v.tagKind(); }

// A pickle interpreter for exactly what torch.save writes for a state dict (protocol 2): plain
// containers, strings, numbers, tensors (torch._utils._rebuild_tensor_v2 over persistent storage
// ids) and collections.OrderedDict, whose BUILD state (a state dict's `_metadata`) is accepted and
// dropped. Any other global is refused before anything is called, so no pickled code can run.
// LibTorch's torch::jit::Unpickler is not used: it turns every OrderedDict into None (what
// model.state_dict() gives) and gives every reference to a storage its own copy.
class StateDictUnpickler {
 public:
  using RecordReader = std::function<std::pair<at::DataPtr, size_t>(const std::string&)>;

  StateDictUnpickler(const char* data, size_t size, RecordReader read_record)
      : data_(data), size_(size), read_record_(std::move(read_record)) {}

  c10::IValue parse() {
    while (true) {
      const size_t at = pos_;
      const uint8_t op = read<uint8_t>();
      switch (op) {
        case 0x80:
          read<uint8_t>();
          break;   // PROTO
        case '.':  // STOP
          TORCH_CHECK(stack_.size() == 1, "data.pkl: STOP with ", stack_.size(),
                      " values on the stack (expected 1)");
          return value(stack_.back());
        case '(':
          marks_.push_back(stack_.size());
          break;
        case 'N':
          push(c10::IValue());
          break;
        case 0x88:
          push(true);
          break;
        case 0x89:
          push(false);
          break;
        case 'K':
          push(int64_t(read<uint8_t>()));
          break;
        case 'M':
          push(int64_t(read<uint16_t>()));
          break;
        case 'J':
          push(int64_t(read<int32_t>()));
          break;
        case 0x8a: {  // LONG1
          const uint8_t n = read<uint8_t>();
          TORCH_CHECK(n <= 8, "data.pkl: LONG1 of ", int(n), " bytes at byte ", at,
                      " (at most 8 are supported)");
          uint64_t v = 0;
          for (uint8_t i = 0; i < n; ++i) v |= uint64_t(read<uint8_t>()) << (8 * i);
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);
          push(static_cast<int64_t>(v));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | read<uint8_t>();
          double d;
          std::memcpy(&d, &bits, 8);
          push(d);
          break;
        }
        case 'X':
          push(bytes(read<uint32_t>()));
          break;  // BINUNICODE
        case 0x8c:
          push(bytes(read<uint8_t>()));
          break;  // SHORT_BINUNICODE
        case ')':
          push(c10::ivalue::Tuple::create(std::vector<c10::IValue>{}));
          break;
        case '}':
          push(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
          break;
        case ']':
          push(c10::impl::GenericList(c10::AnyType::get()));
          break;
        case 't':
          push(c10::ivalue::Tuple::create(values_since_mark()));
          break;
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          std::vector<c10::IValue> items(op - 0x84);
          for (size_t i = items.size(); i-- > 0;) items[i] = value(pop());
          push(c10::ivalue::Tuple::create(std::move(items)));
          break;
        }
        case 'q':
          memo_[read<uint8_t>()] = top();
          break;
        case 'r':
          memo_[read<uint32_t>()] = top();
          break;
        case 'h':
        case 'j': {
          const uint32_t id = op == 'h' ? read<uint8_t>() : read<uint32_t>();
          auto it = memo_.find(id);
          TORCH_CHECK(it != memo_.end(), "data.pkl: memo entry ", id, " is read before it is set");
          stack_.push_back(it->second);
          break;
        }
        case 's': {
          auto v = value(pop());
          auto k = value(pop());
          dict_at(stack_.size(), "SETITEM").insert_or_assign(std::move(k), std::move(v));
          break;
        }
        case 'u': {
          auto items = values_since_mark();
          TORCH_CHECK(items.size() % 2 == 0, "data.pkl: SETITEMS with an odd number of values");
          auto dict = dict_at(stack_.size(), "SETITEMS");
          for (size_t i = 0; i < items.size(); i += 2)
            dict.insert_or_assign(items[i], items[i + 1]);
          break;
        }
        case 'a': {
          auto v = value(pop());
          list_at(stack_.size(), "APPEND").push_back(std::move(v));
          break;
        }
        case 'e': {
          auto items = values_since_mark();
          auto list = list_at(stack_.size(), "APPENDS");
          for (auto& v : items) list.push_back(std::move(v));
          break;
        }
        case 'c': {  // GLOBAL
          const std::string module = line(), name = line();
          Value g;
          if (module == "collections" && name == "OrderedDict") {
            g.global = Global::kOrderedDict;
          } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
            g.global = Global::kRebuildTensor;
          } else if (module == "torch" && storage_type(name, &g.dtype)) {
            g.global = Global::kStorageType;
            g.v = static_cast<int64_t>(g.dtype);
          } else {
            TORCH_CHECK(false, "data.pkl refers to '", module, ".", name,
                        "', which is refused: a state dict holds only tensors (torch.*Storage, "
                        "torch._utils._rebuild_tensor_v2 and collections.OrderedDict are the "
                        "globals accepted)");
          }
          stack_.push_back(g);
          break;
        }
        case 'R': {  // REDUCE
          auto args = value(pop());
          const Value f = pop();
          TORCH_CHECK(args.isTuple(), "data.pkl: REDUCE with arguments of type ", kind_of(args));
          const auto& a = args.toTupleRef().elements();
          if (f.global == Global::kOrderedDict) {
            TORCH_CHECK(a.empty(), "data.pkl: OrderedDict called with arguments");
            push(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
          } else if (f.global == Global::kRebuildTensor) {
            push(rebuild_tensor(a));
          } else {
            TORCH_CHECK(false, "data.pkl: REDUCE at byte ", at, " calls something that is not ",
                        "OrderedDict or _rebuild_tensor_v2");
          }
          break;
        }
        case 'b': {  // BUILD: only a dict's attributes (an OrderedDict's _metadata), dropped
          auto state = value(pop());
          TORCH_CHECK(!stack_.empty() && top().global == Global::kNone && top().v.isGenericDict() &&
                          (state.isGenericDict() || state.isNone()),
                      "data.pkl: BUILD at byte ", at,
                      " sets the state of something that is not a dict (an object's class)");
          break;
        }
        case 'Q':
          push(persistent_storage(value(pop())));
          break;  // BINPERSID
        default:
          TORCH_CHECK(false, "data.pkl: pickle opcode ", int(op), " at byte ", at,
                      " is not one torch.save writes for a state dict");
      }
    }
  }

 private:
  enum class Global { kNone, kOrderedDict, kRebuildTensor, kStorageType };
  struct Value {
    c10::IValue v;
    Global global = Global::kNone;
    c10::ScalarType dtype = c10::ScalarType::Undefined;
  };

  template <typename T>
  T read() {
    TORCH_CHECK(size_ - pos_ >= sizeof(T), "data.pkl ends in the middle of an opcode (byte ", pos_,
                " of ", size_, ")");
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));  // pickle integers are little-endian
    pos_ += sizeof(T);
    return v;
  }
  std::string bytes(size_t n) {
    TORCH_CHECK(size_ - pos_ >= n, "data.pkl: a string of ", n, " bytes runs past its end");
    std::string s(data_ + pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    TORCH_CHECK(nl != nullptr, "data.pkl: an unterminated GLOBAL name");
    const size_t n = static_cast<const char*>(nl) - (data_ + pos_);
    std::string s = bytes(n);
    ++pos_;
    return s;
  }
  void push(c10::IValue v) { stack_.push_back(Value{std::move(v)}); }
  Value& top() {
    TORCH_CHECK(!stack_.empty(), "data.pkl: the pickle stack is empty where a value is needed");
    return stack_.back();
  }
  Value pop() {
    Value v = top();
    stack_.pop_back();
    return v;
  }
  static c10::IValue value(const Value& v) {
    TORCH_CHECK(v.global == Global::kNone || v.global == Global::kStorageType,
                "data.pkl: a class or function is used as a value (only tensors and containers "
                "are accepted)");
    return v.v;
  }
  std::vector<c10::IValue> values_since_mark() {
    TORCH_CHECK(!marks_.empty() && marks_.back() <= stack_.size(), "data.pkl: no MARK");
    const size_t start = marks_.back();
    marks_.pop_back();
    std::vector<c10::IValue> items;
    for (size_t i = start; i < stack_.size(); ++i) items.push_back(value(stack_[i]));
    stack_.resize(start);
    return items;
  }
  c10::impl::GenericDict dict_at(size_t n, const char* op) {
    TORCH_CHECK(n > 0 && stack_[n - 1].global == Global::kNone && stack_[n - 1].v.isGenericDict(),
                "data.pkl: ", op, " on something that is not a dict");
    return stack_[n - 1].v.toGenericDict();
  }
  c10::List<c10::IValue> list_at(size_t n, const char* op) {
    TORCH_CHECK(n > 0 && stack_[n - 1].global == Global::kNone && stack_[n - 1].v.isList(),
                "data.pkl: ", op, " on something that is not a list");
    return stack_[n - 1].v.toList();
  }
  static bool storage_type(const std::string& name, c10::ScalarType* dtype) {
    for (int i = 0; i < static_cast<int>(c10::ScalarType::NumOptions); ++i) {
      const auto t = static_cast<c10::ScalarType>(i);
      if (name == std::string(c10::toString(t)) + "Storage") {
        *dtype = t;
        return true;
      }
    }
    return false;
  }
  // ('storage', torch.<T>Storage, key, location, numel): one at::Storage per key, so tensors that
  // shared a storage in the file share it here.
  c10::IValue persistent_storage(const c10::IValue& id) {
    TORCH_CHECK(id.isTuple(), "data.pkl: a persistent id of type ", kind_of(id));
    // A copy into a vector: indexing the tuple's elements in place (which GCC inlines with their
    // three-element inline storage) makes -Warray-bounds flag e[4], though a 5-tuple is never
    // stored inline.
    const std::vector<c10::IValue> e = id.toTupleRef().elements().vec();
    TORCH_CHECK(e.size() == 5 && e[0].isString() && e[0].toStringRef() == "storage" &&
                    e[2].isString() && e[4].isInt(),
                "data.pkl: a persistent id that is not ('storage', type, key, location, numel)");
    const std::string key = e[2].toStringRef();
    TORCH_CHECK(e[1].isInt(), "data.pkl: storage '", key, "' has no torch.*Storage type");
    const auto dtype = static_cast<c10::ScalarType>(e[1].toInt());
    const int64_t numel = e[4].toInt();
    TORCH_CHECK(numel >= 0, "data.pkl: storage '", key, "' has ", numel, " elements");
    auto it = storages_.find(key);
    if (it == storages_.end()) {
      const size_t item = c10::elementSize(dtype);
      at::DataPtr data;
      size_t held = 0;
      if (numel > 0) std::tie(data, held) = read_record_(key);
      // A storage whose record holds fewer bytes than it claims is refused below, before any
      // tensor is read, by the extent check that names the entry (record_bytes keeps `held`).
      (void)held;
      at::Storage storage(c10::Storage::use_byte_size_t(), numel * item, std::move(data),
                          /*allocator=*/nullptr, /*resizable=*/false);
      it = storages_.emplace(key, std::make_pair(storage, dtype)).first;
    }
    TORCH_CHECK(it->second.second == dtype, "data.pkl: storage '", key, "' is read both as ",
                c10::toString(it->second.second), " and as ", c10::toString(dtype));
    return at::empty({0}, at::TensorOptions().dtype(dtype)).set_(it->second.first);
  }
  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
  static c10::IValue rebuild_tensor(const std::vector<c10::IValue>& a) {
    TORCH_CHECK(
        a.size() >= 5 && a[0].isTensor() && a[1].isInt() && a[2].isTuple() && a[3].isTuple(),
        "data.pkl: _rebuild_tensor_v2 called without (storage, offset, size, stride, ...)");
    auto ints = [](const c10::IValue& t) {
      std::vector<int64_t> out;
      for (const auto& x : t.toTupleRef().elements()) {
        TORCH_CHECK(x.isInt(), "data.pkl: a tensor size or stride that is not an int");
        out.push_back(x.toInt());
      }
      return out;
    };
    const auto size = ints(a[2]), stride = ints(a[3]);
    TORCH_CHECK(size.size() == stride.size(), "data.pkl: a tensor with ", size.size(),
                " sizes and ", stride.size(), " strides");
    const at::Tensor storage = a[0].toTensor();
    return at::empty({0}, storage.options()).set_(storage.storage(), a[1].toInt(), size, stride);
  }

  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  RecordReader read_record_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Value> memo_;
  std::unordered_map<std::string, std::pair<at::Storage, c10::ScalarType>> storages_;
};

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
    std::unordered_map<const void*, size_t> record_bytes;  // storage data -> its record's size
    StateDictUnpickler unpickler(static_cast<const char*>(pickle.get()), pickle_size,
                                 [&](const std::string& key) {
                                   auto [data, size] = reader.getRecord("data/" + key);
                                   record_bytes[data.get()] = size;
                                   return std::make_pair(std::move(data), size);
                                 });
    const c10::IValue root = unpickler.parse();

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
