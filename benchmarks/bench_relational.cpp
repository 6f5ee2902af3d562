// Times one RelationalAttention, DualAttention or DualAttnTransformerLM call of ours and measures
// its peak memory, for benchmarks/bench_relational.py, which runs the reference the same way in its
// own process and prints both side by side. Usage:
//   bench_relational SPEC.json
// SPEC: {"module": "relational_attention" | "dual_attention" | "language_model",
//        "kwargs": {constructor keywords},
//        "case": "inputs.pt" (torch.save of {"state.<name>"..., "x", and "symbols" for a layer or
//                 "targets" for the language model}),
//        "mode": "forward" | "train", "implementation": "auto" | "materialize" | "blockwise" |
//        "sdpa", "threads": 2, "repeats": 3, "device": "cpu" | "cuda", "dtype": "float32" |
//        "bfloat16" | "float16" | "float64", "causal": true, "output": "out.pt"}
// Prints one JSON line: {"times_ms": [...], "cpu_ms": ..., "peak_mb": ..., "rss_reset": ...} where
// peak_mb is the rise of the process's max RSS (VmHWM) across the measured calls on the CPU (after
// a short warm-up call; the max RSS is first reset to the current RSS through
// /proc/self/clear_refs, which rss_reset reports), or the rise of the CUDA caching allocator's peak
// on CUDA; cpu_ms is the process's CPU time per call. Writes the first call's output (and, in train
// mode, the gradient of x, or the language model's loss and embedding gradient) to "output" so that
// the driver can compare them with the reference's.
#include <dual_attention/dual_attention.h>
#include <dual_attention/language_models.h>
#include <dual_attention/relational_attention.h>
#include <malloc.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#ifdef BENCH_HAS_CUDA_STATS  // set by CMake when LibTorch has CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

using namespace dual_attention;
using Implementation = RelationalAttentionImpl::Implementation;
using Json = nlohmann::json;

namespace {

// The process's peak resident set size: VmHWM of /proc/self/status (getrusage's ru_maxrss would
// also count the parent's size at fork, inherited through exec).
double max_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // in kB
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// CPU time of the process (all threads), which a busy machine disturbs less than wall time.
double cpu_ms() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto ms = [](const timeval& t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; };
  return ms(usage.ru_utime) + ms(usage.ru_stime);
}

// Hands freed heap back to the system and resets the max RSS to the current RSS, so that the rise
// measured next is the measured call's and not the loading's. Returns false where Linux refuses.
bool reset_max_rss() {
  malloc_trim(0);
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "bench_relational: cannot open ", path);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Implementation parse_implementation(const std::string& name) {
  if (name == "auto") return Implementation::Auto;
  if (name == "materialize") return Implementation::Materialize;
  if (name == "blockwise") return Implementation::Blockwise;
  if (name == "sdpa") return Implementation::SDPA;
  TORCH_CHECK(false, "bench_relational: implementation '", name,
              "' is not one of auto, materialize, blockwise, sdpa");
}

torch::Dtype parse_dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat;
  if (name == "float64") return torch::kDouble;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  TORCH_CHECK(false, "bench_relational: dtype '", name, "' is not supported");
}

using Outputs = std::vector<std::pair<std::string, torch::Tensor>>;

// The module under test behind one signature: step(x, second, train) runs a forward (under
// no_grad) or a forward and backward, and returns what the driver compares with the reference.
struct Subject {
  std::shared_ptr<torch::nn::Module> module;
  std::function<Outputs(const torch::Tensor&, const torch::Tensor&, bool)> step;
  bool takes_tokens = false;  // x is token ids, not activations
};

// A layer called as layer(x, symbols): its output, and in training the gradient of x from the
// loss out.square().mean().
template <class Call>
Subject layer_subject(std::shared_ptr<torch::nn::Module> module, Call call) {
  Subject s;
  s.module = std::move(module);
  s.step = [call](const torch::Tensor& x, const torch::Tensor& symbols,
                  bool train) mutable -> Outputs {
    if (!train) {
      torch::NoGradGuard no_grad;
      return {{"out", call(x, symbols)}};
    }
    auto xg = x.detach().requires_grad_(true);
    auto out = call(xg, symbols);
    out.to(torch::kFloat).square().mean().backward();
    return {{"out", out.detach()}, {"x_grad", xg.grad()}};
  };
  return s;
}

Subject make_subject(const Json& spec) {
  const bool causal = spec.value("causal", true);
  const std::string kind = spec.at("module");
  if (kind == "relational_attention") {
    RelationalAttentionOptions opts(1, 1);
    apply_kwargs(opts, spec.at("kwargs"), "bench_relational: RelationalAttention");
    auto m = RelationalAttention(opts);
    return layer_subject(
        m.ptr(), [m, causal](const torch::Tensor& x, const torch::Tensor& s) mutable {
          return std::get<0>(m->forward(x, s, {}, {}, {}, causal, /*need_weights=*/false));
        });
  }
  if (kind == "dual_attention") {
    DualAttentionOptions opts(1, 1, 1, 0.0);
    apply_kwargs(opts, spec.at("kwargs"), "bench_relational: DualAttention");
    auto m = DualAttention(opts);
    return layer_subject(
        m.ptr(), [m, causal](const torch::Tensor& x, const torch::Tensor& s) mutable {
          return std::get<0>(m->forward(x, s, {}, causal, {}, {}, /*need_weights=*/false));
        });
  }
  if (kind == "language_model") {
    auto m = DualAttnTransformerLM(DualAttnTransformerLMOptions::from_kwargs(spec.at("kwargs")));
    Subject s;
    s.module = m.ptr();
    s.takes_tokens = true;
    s.step = [m](const torch::Tensor& idx, const torch::Tensor& targets,
                 bool train) mutable -> Outputs {
      if (!train) {
        torch::NoGradGuard no_grad;
        return {{"out", std::get<0>(m->forward(idx))}};
      }
      auto [logits, loss] = m->forward(idx, targets);
      loss.backward();
      // Tied weights: final_out.weight is token_embedder.weight, as in the reference.
      return {{"out", logits.detach()},
              {"loss", loss.detach().reshape({1})},
              {"embedding_grad", m->named_parameters()["layers.final_out.weight"].grad()}};
    };
    return s;
  }
  TORCH_CHECK(false, "bench_relational: module '", kind,
              "' is not one of relational_attention, dual_attention, language_model");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: bench_relational SPEC.json\n";
    return 2;
  }
  try {
    const Json spec = Json::parse(read_file(argv[1]));
    at::set_num_threads(spec.value("threads", 2));
    const torch::Device device(spec.value("device", std::string("cpu")));
    const auto dtype = parse_dtype(spec.value("dtype", std::string("float32")));
    const bool train = spec.at("mode") == "train";
    const int repeats = spec.value("repeats", 3);

    auto subject = make_subject(spec);
    const auto relational = relational_attention_layers(*subject.module);
    for (auto* ra : relational) {
      ra->implementation = parse_implementation(spec.value("implementation", std::string("auto")));
    }
    auto inputs = torch::pickle_load(read_file(spec.at("case"))).toGenericDict();
    {
      torch::NoGradGuard no_grad;
      for (auto& p : subject.module->named_parameters()) {
        p.value().copy_(inputs.at("state." + p.key()).toTensor());
      }
    }
    subject.module->to(device, dtype);
    subject.module->train(false);  // dropout off: the timings compare the deterministic maths
    auto x = inputs.at("x").toTensor().to(device);
    torch::Tensor second;
    if (subject.takes_tokens) {
      second = inputs.at("targets").toTensor().to(device);
    } else {
      x = x.to(dtype);
      second = inputs.at("symbols").toTensor().to(device, dtype);
    }

    auto step = [&](const torch::Tensor& x_in, const torch::Tensor& s_in) {
      subject.module->zero_grad();
      return subject.step(x_in, s_in, train);
    };
    auto sync = [&] {
      if (device.is_cuda()) torch::cuda::synchronize();
    };

    // Warm-up on a short prefix: thread pools, allocator arenas, kernels.
    const int64_t warm = std::min<int64_t>(x.size(1), 64);
    step(x.narrow(1, 0, warm), second.narrow(1, 0, warm));
    sync();

    const bool rss_reset = reset_max_rss();
    const double rss_before = max_rss_mb();
    const double cpu_before = cpu_ms();
#ifdef BENCH_HAS_CUDA_STATS
    int64_t cuda_before = 0;
    if (device.is_cuda()) {
      c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
      cuda_before =
          c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index())
              .allocated_bytes[0]
              .current;
    }
#endif
    std::vector<double> times;
    Outputs first;
    for (int r = 0; r < repeats; ++r) {
      sync();
      const auto t0 = std::chrono::steady_clock::now();
      auto result = step(x, second);
      sync();
      times.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      if (r == 0) first = result;
    }
    double peak_mb = max_rss_mb() - rss_before;
    const double cpu_per_call = (cpu_ms() - cpu_before) / repeats;
#ifdef BENCH_HAS_CUDA_STATS
    if (device.is_cuda()) {
      const auto stats =
          c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
      peak_mb = static_cast<double>(stats.allocated_bytes[0].peak - cuda_before) / (1 << 20);
    }
#endif

    if (spec.contains("output")) {
      c10::Dict<std::string, torch::Tensor> saved;
      for (const auto& [name, tensor] : first)
        saved.insert(name, tensor.to(torch::kCPU, torch::kFloat));
      auto bytes = torch::pickle_save(saved);
      std::ofstream(spec.at("output").get<std::string>(), std::ios::binary)
          .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    Json result = {{"times_ms", times},
                   {"cpu_ms", cpu_per_call},
                   {"peak_mb", peak_mb},
                   {"rss_reset", rss_reset}};
    if (!relational.empty()) {
      std::ostringstream impl;
      impl << relational.front()->last_implementation;
      result["implementation"] = impl.str();
    }
    std::cout << result.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_relational: " << e.what() << "\n";
    return 1;
  }
}
