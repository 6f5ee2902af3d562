// safetensors reading and writing: round trips, files written by Python's safetensors, and every
// kind of malformed file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "dual_attention/io/safetensors.h"
#include "test_paths.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace dual_attention::io;

using namespace test_support;

namespace {

const fs::path kFixtures = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "io";

std::string le64(uint64_t n) { return std::string(reinterpret_cast<const char*>(&n), 8); }

// A file from a header given as text and a data section.
std::string file_bytes(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

// The message of the c10::Error that opening `path` raises, or "" when it opens.
std::string open_error(const fs::path& path) {
  try {
    SafetensorsFile::open(path.string());
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

class Safetensors : public TempDirTest {
 protected:
  // Writes `bytes` and returns the error opening it raises, checking that it names the file.
  std::string malformed(const std::string& bytes) {
    const fs::path path = dir / "bad.safetensors";
    write_bytes(path, bytes);
    std::string message = open_error(path);
    EXPECT_FALSE(message.empty()) << "opened without error";
    EXPECT_TRUE(contains(message, path.string())) << message;
    return message;
  }
};

// One tensor of each dtype with values that exercise every bit pattern class.
std::map<std::string, torch::Tensor> every_dtype() {
  torch::manual_seed(1);
  std::map<std::string, torch::Tensor> t;
  auto specials = torch::tensor({NAN, INFINITY, -INFINITY, -0.0f, 1e-40f}, torch::kFloat64);
  for (auto [name, dtype] : {std::pair{"f64", torch::kFloat64},
                             {"f32", torch::kFloat32},
                             {"f16", torch::kFloat16},
                             {"bf16", torch::kBFloat16}}) {
    auto v = torch::randn({3, 5}, torch::kFloat64);
    v.view(-1).slice(0, 0, 5).copy_(specials);
    t[name] = v.to(dtype);
  }
  t["i64"] = torch::randint(INT64_MIN, INT64_MAX, {4, 2}, torch::kInt64);
  t["i32"] = torch::randint(INT32_MIN, INT32_MAX, {4, 2}, torch::kInt32);
  t["i16"] = torch::randint(INT16_MIN, INT16_MAX, {4, 2}, torch::kInt16);
  t["i8"] = torch::randint(-128, 127, {4, 2}, torch::kInt8);
  t["u8"] = torch::randint(0, 255, {4, 2}, torch::kUInt8);
  t["bool"] = torch::randint(0, 2, {3, 3}).to(torch::kBool);
  t["scalar_f16"] = torch::tensor(1.5, torch::kFloat16);
  t["scalar_bool"] = torch::tensor(true);
  t["scalar_i8"] = torch::tensor(-3, torch::kInt8);
  t["empty_i64"] = torch::zeros({0}, torch::kInt64);
  t["empty_f32"] = torch::zeros({2, 0, 3});
  t["empty_u8"] = torch::zeros({0, 4}, torch::kUInt8);
  // The dtypes safetensors added after the first ten: every bit pattern of the 8-bit floats.
  const auto all_bytes = torch::arange(256, torch::kInt32).to(torch::kUInt8);
  t["f8_e4m3"] = all_bytes.view(torch::kFloat8_e4m3fn);
  t["f8_e5m2"] = all_bytes.view(torch::kFloat8_e5m2);
  t["f8_e8m0"] = all_bytes.view(torch::kFloat8_e8m0fnu);
  t["f8_e4m3fnuz"] = all_bytes.view(torch::kFloat8_e4m3fnuz);
  t["f8_e5m2fnuz"] = all_bytes.view(torch::kFloat8_e5m2fnuz);
  t["u16"] = torch::randint(0, 65535, {3, 2}, torch::kInt32).to(torch::kUInt16);
  t["u32"] = torch::randint(INT32_MIN, INT32_MAX, {3, 2}, torch::kInt32).view(torch::kUInt32);
  t["u64"] = torch::randint(INT64_MIN, INT64_MAX, {3, 2}, torch::kInt64).view(torch::kUInt64);
  t["c64"] = torch::randn({2, 3}, torch::kComplexFloat);
  return t;
}

}  // namespace

TEST_F(Safetensors, RoundTripIsBitExactForEveryDtypeAsCopiesAndViews) {
  const auto original = every_dtype();
  const auto path = (dir / "all.safetensors").string();
  save_safetensors(path, original);
  for (bool zero_copy : {false, true}) {
    const auto loaded = load_safetensors(path, LoadOptions().zero_copy(zero_copy));
    ASSERT_EQ(loaded.tensors.size(), original.size());
    EXPECT_TRUE(loaded.metadata.empty());
    for (const auto& [name, t] : original) {
      const auto& got = loaded.tensors.at(name);
      EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
      EXPECT_EQ(got.sizes(), t.sizes()) << name;
      EXPECT_EQ(bytes_of(got), bytes_of(t)) << name;
    }
  }
}

TEST_F(Safetensors, NonContiguousTensorsAreWrittenAsTheirContiguousValues) {
  auto base = torch::arange(24, torch::kFloat32).reshape({4, 6});
  std::map<std::string, torch::Tensor> tensors{
      {"transposed", base.t()},
      {"strided", base.slice(1, 0, 6, 2)},
      {"expanded", torch::tensor({1.0, 2.0}, torch::kFloat64).unsqueeze(0).expand({3, 2})},
      {"offset_view", base[2]}};
  const auto path = (dir / "views.safetensors").string();
  save_safetensors(path, tensors);
  auto file = SafetensorsFile::open(path);
  for (const auto& [name, t] : tensors) {
    auto got = file.get(name);
    EXPECT_TRUE(got.is_contiguous()) << name;
    EXPECT_EQ(got.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(got, t)) << name;
  }
  // The row view shares storage with `transposed` and `strided` but is not the same view: it is
  // stored in full, not aliased.
  EXPECT_TRUE(file.contains("offset_view"));
  EXPECT_TRUE(file.aliases().empty());
}

TEST_F(Safetensors, MetadataRoundTripsIncludingEscapesAndUnicode) {
  const Metadata metadata{{"format", "pt"},
                          {"quote\"back\\slash", "line\nbreak\ttab\x01 control"},
                          {"unicode", "Größe 字 \xF0\x9F\x98\x80"},
                          {"empty", ""}};
  const auto path = (dir / "meta.safetensors").string();
  save_safetensors(path, {{"x", torch::ones({2})}}, metadata);
  EXPECT_EQ(SafetensorsFile::open(path).metadata(), metadata);
}

TEST_F(Safetensors, FileDescribesItsTensorsSortedByName) {
  const auto path = (dir / "info.safetensors").string();
  save_safetensors(path, NamedTensors{{"zeta", torch::zeros({2, 3}, torch::kInt16)},
                                      {"alpha", torch::zeros({5}, torch::kFloat64)}});
  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.keys(), (std::vector<std::string>{"alpha", "zeta"}));
  EXPECT_EQ(file.path(), path);
  const auto& info = file.info("zeta");
  EXPECT_EQ(info.dtype, "I16");
  EXPECT_EQ(info.scalar_type, torch::kInt16);
  EXPECT_EQ(info.shape, (std::vector<int64_t>{2, 3}));
  // F64 sorts before I16 (descending alignment), so alpha's 40 bytes come first.
  EXPECT_EQ(info.data_begin, 40u);
  EXPECT_EQ(info.data_end, 52u);
  EXPECT_FALSE(file.contains("beta"));
  expect_error([&] { file.get("beta"); }, {"no tensor named 'beta'", "alpha, zeta"});
  EXPECT_THROW(file.info("beta"), c10::Error);
}

TEST_F(Safetensors, HeaderIsOrderedAndPaddedAsPythonWritesIt) {
  const auto path = (dir / "order.safetensors").string();
  save_safetensors(path,
                   NamedTensors{{"b", torch::zeros({1}, torch::kBool)},
                                {"a", torch::zeros({1}, torch::kFloat32)},
                                {"c", torch::zeros({1}, torch::kInt64)},
                                {"d", torch::zeros({1}, torch::kBFloat16)}},
                   {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  const std::string expected =
      R"({"__metadata__":{"k":"v"},"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
      R"("d":{"dtype":"BF16","shape":[1],"data_offsets":[12,14]},)"
      R"("b":{"dtype":"BOOL","shape":[1],"data_offsets":[14,15]}})";
  EXPECT_EQ(header.substr(0, expected.size()), expected);
  EXPECT_EQ(header.find_first_not_of(' ', expected.size()), std::string::npos);
  EXPECT_LT(header.size() - expected.size(), 8u);
  EXPECT_EQ(bytes.size(), 8 + n + 15);
}

TEST_F(Safetensors, ReadsEveryDtypeWrittenByPython) {
  const auto expected = nlohmann::json::parse(read_bytes(kFixtures / "all_dtypes.json"));
  for (bool zero_copy : {false, true}) {
    const auto loaded = load_safetensors((kFixtures / "all_dtypes.safetensors").string(),
                                         LoadOptions().zero_copy(zero_copy));
    EXPECT_EQ(nlohmann::json(loaded.metadata), expected["metadata"]);
    ASSERT_EQ(loaded.tensors.size(), expected["tensors"].size());
    for (const auto& [name, want] : expected["tensors"].items()) {
      const auto& got = loaded.tensors.at(name);
      EXPECT_EQ(safetensors_dtype(got.scalar_type()), want["dtype"]) << name;
      EXPECT_EQ(got.sizes().vec(), want["shape"].get<std::vector<int64_t>>()) << name;
      EXPECT_EQ(bytes_of(got), hex_to_bytes(want["hex"])) << name;
    }
  }
}

TEST_F(Safetensors, RewritingPythonsFileGivesTheSameBytes) {
  const auto original = kFixtures / "all_dtypes.safetensors";
  const auto loaded = load_safetensors(original.string());
  const auto path = dir / "rewritten.safetensors";
  save_safetensors(path.string(), loaded.tensors, loaded.metadata);
  EXPECT_EQ(read_bytes(path), read_bytes(original));
}

TEST_F(Safetensors, SharedTensorsAreWrittenOnceUnderTheFirstNameWithAliases) {
  auto w = torch::randn({3, 2});
  const auto path = (dir / "shared.safetensors").string();
  save_safetensors(
      path, NamedTensors{{"z.weight", w}, {"a.weight", w}, {"m.weight", w}, {"copy", w.clone()}});
  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.keys(), (std::vector<std::string>{"a.weight", "copy"}));
  const Metadata aliases{{"m.weight", "a.weight"}, {"z.weight", "a.weight"}};
  EXPECT_EQ(file.metadata(), aliases);
  EXPECT_EQ(file.aliases(), aliases);
  EXPECT_EQ(file.resolve("z.weight"), "a.weight");

  const auto resolved = file.tensors();
  ASSERT_EQ(resolved.size(), 4u);
  EXPECT_TRUE(torch::equal(resolved.at("z.weight"), w));
  // Names of one stored tensor come back as one tensor, so they stay tied.
  EXPECT_TRUE(resolved.at("z.weight").is_same(resolved.at("a.weight")));
  EXPECT_FALSE(resolved.at("copy").is_same(resolved.at("a.weight")));

  const auto unresolved = file.tensors(LoadOptions().resolve_aliases(false));
  EXPECT_EQ(unresolved.size(), 2u);
  EXPECT_THROW(file.get("z.weight", LoadOptions().resolve_aliases(false)), c10::Error);
  EXPECT_TRUE(torch::equal(file.get("m.weight"), w));
}

TEST_F(Safetensors, CallersMetadataIsNeverOverriddenByAnAlias) {
  auto w = torch::ones({2});
  const auto path = (dir / "keep.safetensors").string();
  save_safetensors(path, NamedTensors{{"a", w}, {"b", w}}, {{"b", "user value"}});
  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata(), (Metadata{{"b", "user value"}}));
  EXPECT_TRUE(file.aliases().empty());
}

TEST_F(Safetensors, AnAliasToAMissingTensorIsAnError) {
  const std::string header =
      R"({"__metadata__":{"b":"nowhere","format":"pt"},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  const auto path = dir / "dangling.safetensors";
  write_bytes(path, file_bytes(header, "xy"));
  auto file = SafetensorsFile::open(path.string());
  EXPECT_TRUE(file.aliases().empty());  // neither entry names a stored tensor
  EXPECT_EQ(file.tensors().size(), 1u);
  expect_error([&] { file.get("b"); }, {"'b' is an alias", "'nowhere'", path.string()});
}

TEST_F(Safetensors, ViewsPointIntoTheMappingAndOutliveTheFileObject) {
  const auto path = (dir / "views.safetensors").string();
  auto w = torch::arange(16, torch::kFloat32);
  save_safetensors(path, {{"w", w}});
  torch::Tensor view, again;
  {
    auto file = SafetensorsFile::open(path);
    view = file.get("w", LoadOptions().zero_copy(true));
    again = file.get("w", LoadOptions().zero_copy(true));
    EXPECT_EQ(view.data_ptr(), again.data_ptr());
    EXPECT_NE(file.get("w").data_ptr(), view.data_ptr());
  }
  fs::remove(path);
  EXPECT_TRUE(torch::equal(view, w));
  // Writing through a view changes this process's pages, not the file or other processes.
  view.fill_(7);
  EXPECT_TRUE(torch::equal(again, torch::full({16}, 7.0f)));
}

TEST_F(Safetensors, WritingNeverChangesTheFileUnderALiveView) {
  const auto path = (dir / "replace.safetensors").string();
  save_safetensors(path, {{"w", torch::zeros({1000})}});
  auto view = SafetensorsFile::open(path).get("w", LoadOptions().zero_copy(true));
  save_safetensors(path, {{"w", torch::ones({1000})}});
  EXPECT_TRUE(torch::equal(view, torch::zeros({1000})));
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(path).get("w"), torch::ones({1000})));
  // Only the file itself is left: the temporary was renamed over it.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
}

TEST_F(Safetensors, MisalignedDataIsReadAsACopy) {
  // A writer that does not pad its header leaves the F32 data at an odd address.
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";  // 57 bytes
  ASSERT_NE(header.size() % 4, 0u);
  float values[2] = {1.5f, -2.0f};
  const auto path = dir / "odd.safetensors";
  write_bytes(path, file_bytes(header, std::string(reinterpret_cast<char*>(values), 8)));
  auto t = SafetensorsFile::open(path.string()).get("w", LoadOptions().zero_copy(true));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 4, 0u);
  EXPECT_TRUE(torch::equal(t, torch::tensor({1.5f, -2.0f})));
}

TEST_F(Safetensors, LeadingAndTrailingWhitespaceInTheHeaderIsAccepted) {
  const auto path = dir / "ws.safetensors";
  write_bytes(path, file_bytes("\t\n{}\r "));
  EXPECT_TRUE(SafetensorsFile::open(path.string()).keys().empty());
}

TEST_F(Safetensors, WriterRejectsWhatTheFormatCannotHold) {
  const auto path = (dir / "bad.safetensors").string();
  auto message = [&](const NamedTensors& tensors, const Metadata& metadata = {}) -> std::string {
    try {
      save_safetensors(path, tensors, metadata);
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "";
  };
  EXPECT_TRUE(contains(message({{"c", torch::zeros({2}, torch::kComplexDouble)}}),
                       "tensor 'c' has dtype ComplexDouble"));
  EXPECT_TRUE(
      contains(message({{"f4", torch::zeros({2}, torch::kUInt8).view(torch::kFloat4_e2m1fn_x2)}}),
               "tensor 'f4' has dtype Float4_e2m1fn_x2"));
  EXPECT_TRUE(contains(message({{"x", torch::zeros({1})}, {"x", torch::ones({1})}}),
                       "'x' appears more than once"));
  EXPECT_TRUE(contains(message({{"u", torch::Tensor()}}), "tensor 'u' is undefined"));
  EXPECT_TRUE(contains(message({{"__metadata__", torch::zeros({1})}}), "cannot name a tensor"));
  EXPECT_TRUE(contains(message({{"s", torch::eye(3).to_sparse()}}), "only dense"));
  EXPECT_TRUE(contains(message({{std::string("bad\xff"), torch::zeros({1})}}), "not valid UTF-8"));
  EXPECT_TRUE(contains(message({{"x", torch::zeros({1})}}, {{"k", "\xc3"}}), "not valid UTF-8"));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir));  // no temporary left behind
}

// ---- malformed files: each is a c10::Error naming the file and the problem -------------------

TEST_F(Safetensors, RejectsFilesShorterThanTheLengthPrefix) {
  EXPECT_TRUE(contains(malformed(""), "file is 0 bytes long, shorter than the 8-byte"));
  EXPECT_TRUE(contains(malformed("abcde"), "file is 5 bytes long"));
}

TEST_F(Safetensors, RejectsAHeaderLengthBeyondTheFile) {
  EXPECT_TRUE(contains(malformed(le64(100) + "{}"), "header length 100 runs past the end"));
  EXPECT_TRUE(contains(malformed(le64(UINT64_MAX)), "exceeds the 100000000-byte limit"));
}

TEST_F(Safetensors, RejectsAHeaderOver100MB) {
  EXPECT_TRUE(contains(malformed(le64(100'000'001) + "{}"),
                       "header length 100000001 exceeds the 100000000-byte limit"));
}

TEST_F(Safetensors, RejectsAHeaderThatIsNotUtf8OrNotJsonOrNotAnObject) {
  EXPECT_TRUE(contains(malformed(file_bytes("{\"a\xff\":1}")),
                       "header is not valid UTF-8 (bad byte at header offset 3)"));
  // An encoded surrogate (U+D800) is not UTF-8 either.
  EXPECT_TRUE(contains(malformed(file_bytes("{\"\xed\xa0\x80\":1}")), "not valid UTF-8"));
  EXPECT_TRUE(contains(malformed(file_bytes("{\"a\": ")), "header is not valid JSON"));
  EXPECT_TRUE(contains(malformed(file_bytes("{} trailing")), "header is not valid JSON"));
  EXPECT_TRUE(contains(malformed(file_bytes("[1, 2]")), "header must be a JSON object, got array"));
  EXPECT_TRUE(contains(malformed(file_bytes("")), "header is not valid JSON"));
}

TEST_F(Safetensors, RejectsEntriesWithMissingOrMistypedFields) {
  const std::string data(8, '\0');
  auto entry = [&](const std::string& body) {
    return malformed(file_bytes("{\"t\":" + body + "}", data));
  };
  EXPECT_TRUE(contains(entry("5"), "tensor 't': entry must be an object, got 5"));
  EXPECT_TRUE(contains(entry(R"({"shape":[2],"data_offsets":[0,8]})"), "entry has no 'dtype'"));
  EXPECT_TRUE(contains(entry(R"({"dtype":"F32","data_offsets":[0,8]})"), "entry has no 'shape'"));
  EXPECT_TRUE(contains(entry(R"({"dtype":"F32","shape":[2]})"), "entry has no 'data_offsets'"));
  EXPECT_TRUE(contains(entry(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"),
                       "dtype must be a string, got 4"));
  EXPECT_TRUE(contains(entry(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"),
                       "shape must be a list"));
  EXPECT_TRUE(contains(entry(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"),
                       "must hold integers, got 2.0"));
  EXPECT_TRUE(contains(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"),
                       "data_offsets must be two non-negative integers"));
  EXPECT_TRUE(contains(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"),
                       "data_offsets must be two non-negative integers"));
  EXPECT_TRUE(contains(entry(R"({"dtype":"F32","shape":[2],"data_offsets":"0-8"})"),
                       "data_offsets must be two non-negative integers"));
}

TEST_F(Safetensors, RejectsUnknownDtypes) {
  const auto message =
      malformed(file_bytes(R"({"t":{"dtype":"F8_E9M9","shape":[1],"data_offsets":[0,1]}})", "x"));
  EXPECT_TRUE(contains(message, "tensor 't': unknown dtype 'F8_E9M9' (expected one of BOOL, U8"))
      << message;
  EXPECT_TRUE(contains(message, "F8_E4M3, F8_E8M0")) << message;
}

TEST_F(Safetensors, SubByteDtypesThatTorchCannotHoldAreRefusedByName) {
  for (const char* dtype : {"F4", "F6_E2M3", "F6_E3M2"}) {
    const auto message = malformed(file_bytes(
        std::string(R"({"t":{"dtype":")") + dtype + R"(","shape":[2],"data_offsets":[0,1]}})",
        "x"));
    EXPECT_TRUE(contains(
        message, std::string("dtype '") + dtype + "' (a packed sub-byte float) has no torch dtype"))
        << message;
  }
}

// Issue 16: a NUL byte once ended header parsing, so that "{...}\0XYZ" loaded as "{...}". Only
// whitespace may surround the JSON object, as in the safetensors library (which accepts JSON's
// whitespace: space, tab, newline, carriage return), and the whole stated length is parsed.
TEST_F(Safetensors, ANulByteOrAnyOtherByteAfterTheHeaderObjectIsRefused) {
  const std::string entry = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const std::string one = std::string("\x00\x00\x80\x3f", 4);
  auto padded = [&](std::string header) {  // padded with spaces to a multiple of 8
    header.resize((header.size() + 7) / 8 * 8, ' ');
    return header;
  };
  // The issue's file: the header, a NUL, XYZ, padding, then 1.0f.
  const std::string bad = padded(entry + std::string("\0XYZ", 4));
  EXPECT_TRUE(
      contains(malformed(file_bytes(bad, one)), "header has a NUL byte at header offset 54 of 64"))
      << malformed(file_bytes(bad, one));
  // A NUL alone, NUL padding, and other stray bytes after the object.
  EXPECT_TRUE(contains(malformed(file_bytes(entry + std::string(1, '\0'), one)), "NUL byte"));
  EXPECT_TRUE(contains(malformed(file_bytes(entry + std::string(9, '\0'), one)), "NUL byte"));
  EXPECT_TRUE(contains(malformed(file_bytes(std::string(1, '\0') + entry, one)), "NUL byte"));
  for (const std::string tail : {"x", "}", "{}", ",", "\x01", "\x7f", "// c"}) {
    EXPECT_TRUE(contains(malformed(file_bytes(entry + tail, one)), "header is not valid JSON"))
        << tail;
  }
  // A real file with "\0..." written inside its header's padding.
  const auto path = dir / "real.safetensors";
  save_safetensors(path.string(), NamedTensors{{"a", torch::tensor({1.0f})}});
  std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_GE(n, 56u);  // the 55-byte object padded to 56
  bytes[8 + n - 1] = '\0';
  EXPECT_TRUE(contains(malformed(bytes), "NUL byte")) << malformed(bytes);
  // Whitespace padding still loads, spaces as save_safetensors writes and JSON's other whitespace.
  write_bytes(path, file_bytes(padded(entry) + " \t\r\n", one));
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(path.string()).get("a"), torch::tensor({1.0f})));
}

TEST_F(Safetensors, HeadersNestedDeeperThanSerdeJsonAllowsAreRefused) {
  const std::string deep =
      "{\"__metadata__\":" + std::string(200, '[') + std::string(200, ']') + "}";
  EXPECT_TRUE(contains(malformed(file_bytes(deep)), "nests JSON values more than 128 deep"));
}

TEST_F(Safetensors, FromBytesChecksAndReadsAFileHeldInMemory) {
  const auto path = dir / "m.safetensors";
  const auto original = every_dtype();
  save_safetensors(path.string(), original);
  auto file = SafetensorsFile::from_bytes(read_bytes(path), "in-memory");
  for (const auto& [name, t] : original) {
    EXPECT_EQ(bytes_of(file.get(name)), bytes_of(t)) << name;
    EXPECT_EQ(bytes_of(file.get(name, LoadOptions().zero_copy(true))), bytes_of(t)) << name;
  }
  expect_error([] { SafetensorsFile::from_bytes(std::string(5, 'x'), "in-memory"); },
               {"'in-memory': file is 5 bytes long"});
}

TEST_F(Safetensors, RejectsNegativeAndOverflowingShapes) {
  EXPECT_TRUE(
      contains(malformed(file_bytes(R"({"t":{"dtype":"I32","shape":[-1,2],"data_offsets":[0,8]}})",
                                    std::string(8, '\0'))),
               "has a negative dimension"));
  // The two overflows of the Rust implementation's own tests: the shape product, then the bytes.
  EXPECT_TRUE(contains(
      malformed(file_bytes(
          R"({"t":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}})",
          std::string(16, '\0'))),
      "has a dimension above 2^63 - 1"));
  EXPECT_TRUE(
      contains(malformed(file_bytes(
                   R"({"t":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}})",
                   std::string(16, '\0'))),
               "overflows 64 bits"));
  EXPECT_TRUE(
      contains(malformed(file_bytes(
                   R"({"t":{"dtype":"I64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                   std::string(8, '\0'))),
               "overflows 64 bits"));
  EXPECT_TRUE(contains(
      malformed(file_bytes(
          R"({"t":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}})", "x")),
      "must hold integers"));
}

TEST_F(Safetensors, RejectsOffsetsThatDisagreeWithTheShapeOrTheFile) {
  const std::string data(16, '\0');
  EXPECT_TRUE(contains(
      malformed(file_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", data)),
      "data_offsets [8,4] begin after they end"));
  EXPECT_TRUE(contains(
      malformed(file_bytes(R"({"t":{"dtype":"I32","shape":[2,2],"data_offsets":[0,4]}})", data)),
      "data_offsets [0,4] span 4 bytes but dtype I32 and shape [2,2] need 16"));
  EXPECT_TRUE(contains(
      malformed(file_bytes(R"({"t":{"dtype":"F64","shape":[4],"data_offsets":[0,32]}})", data)),
      "data_offsets [0,32] are out of range: the data section has 16 bytes"));
  EXPECT_TRUE(contains(
      malformed(file_bytes(
          R"({"t":{"dtype":"U8","shape":[2],"data_offsets":[18446744073709551614,18446744073709551616]}})",
          data)),
      "data_offsets must be two non-negative integers"));
}

TEST_F(Safetensors, RejectsOverlappingTensors) {
  const auto message = malformed(file_bytes(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      std::string(12, '\0')));
  EXPECT_TRUE(contains(message, "tensor 'b' (bytes [4, 12)) overlaps tensor 'a'")) << message;
  // A tensor inside another one, and two tensors on the same bytes.
  EXPECT_TRUE(contains(
      malformed(file_bytes(
          R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
          std::string(8, '\0'))),
      "overlaps tensor 'a'"));
  EXPECT_TRUE(contains(
      malformed(file_bytes(
          R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
          std::string(4, '\0'))),
      "tensor 'b' (bytes [0, 4)) overlaps tensor 'a'"));
}

TEST_F(Safetensors, RejectsHolesAndTrailingBytesInTheDataSection) {
  EXPECT_TRUE(contains(
      malformed(file_bytes(
          R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
          std::string(12, '\0'))),
      "bytes [4, 8) of the data section belong to no tensor (a hole before tensor 'b')"));
  EXPECT_TRUE(
      contains(malformed(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                    std::string(8, '\0'))),
               "bytes [0, 4) of the data section belong to no tensor"));
  EXPECT_TRUE(
      contains(malformed(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                    std::string(9, '\0'))),
               "bytes [4, 9) at the end of the data section belong to no tensor"));
  EXPECT_TRUE(contains(malformed(file_bytes("{}", "x")), "bytes [0, 1) at the end"));
}

TEST_F(Safetensors, RejectsDuplicateNamesAndMalformedMetadata) {
  EXPECT_TRUE(contains(
      malformed(file_bytes(
          R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})")),
      "header names 'a' more than once"));
  EXPECT_TRUE(contains(malformed(file_bytes(R"({"__metadata__":[1]})")),
                       "__metadata__ must be an object of strings, got array"));
  EXPECT_TRUE(contains(malformed(file_bytes(R"({"__metadata__":{"k":1}})")),
                       "__metadata__ entry 'k' must be a string, got 1"));
}

TEST_F(Safetensors, RejectsPathsThatAreNotReadableFiles) {
  EXPECT_TRUE(contains(open_error(dir / "absent.safetensors"), "cannot open: No such file"));
  EXPECT_TRUE(contains(open_error(dir), "is a directory"));
}

// Every truncation of a valid file, and every header byte replaced by a few others, either loads
// or raises c10::Error: never a crash or a read outside the mapping (the sanitized build checks
// the latter).
TEST_F(Safetensors, CorruptedFilesRaiseErrorsAndNeverCrash) {
  const auto good_path = dir / "good.safetensors";
  save_safetensors(good_path.string(),
                   NamedTensors{{"a", torch::arange(6, torch::kInt16).reshape({2, 3})},
                                {"b", torch::tensor({1.5, 2.5})},
                                {"c", torch::zeros({0, 2})}},
                   {{"m", "v"}});
  const std::string good = read_bytes(good_path);
  uint64_t n;
  std::memcpy(&n, good.data(), 8);
  const auto path = dir / "corrupt.safetensors";
  int errors = 0, opened = 0;
  auto attempt = [&](const std::string& bytes) {
    write_bytes(path, bytes);
    try {
      for (const auto& [name, t] : load_safetensors(path.string()).tensors) (void)bytes_of(t);
      ++opened;
    } catch (const c10::Error&) {
      ++errors;
    }
  };
  for (size_t size = 0; size < good.size(); ++size) attempt(good.substr(0, size));
  EXPECT_EQ(errors, static_cast<int>(good.size()));  // every truncation is detected
  for (size_t i = 0; i < 8 + n; ++i) {
    for (char c : {'\xff', '9', '"', '}'}) {
      std::string bytes = good;
      bytes[i] = c;
      attempt(bytes);
    }
  }
  EXPECT_GT(opened, 0);
  EXPECT_GT(errors, static_cast<int>(good.size()));
}
