// Data parallelism on LibTorch's c10d (include/dual_attention/distributed.h).
//
// ProcessGroupGloo.hpp includes gloo's headers, which the torch wheel does not ship. CMake
// defines DUAL_ATTENTION_WITH_GLOO when it finds them (Debian's libgloo-dev). They serve as
// declarations only: every gloo object is created and used inside LibTorch, and this file calls
// only out-of-line members of ProcessGroupGloo (its constructor, Options::create_default) and the
// virtual collectives of c10d::Backend. ProcessGroupGloo and its Options hold gloo objects only
// through pointers, so their layout here is LibTorch's whatever gloo version the headers come
// from. Never call the header's inline members that touch gloo objects (setTimeout does).
#include "dual_attention/distributed.h"

#include <cstdlib>
#include <limits>
#include <string>
#include <utility>

#ifdef DUAL_ATTENTION_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace dual_attention::distributed {

namespace {

// An environment variable as an integer in [min, max], or `fallback` when unset.
int64_t env_integer(const char* name, int64_t fallback, int64_t min, int64_t max) {
  const char* raw = std::getenv(name);
  if (raw == nullptr) return fallback;
  const std::string text(raw);
  int64_t value = 0;
  size_t used = 0;
  bool parsed = false;
  try {
    value = std::stoll(text, &used);
    parsed = used == text.size() && !text.empty();
  } catch (const std::exception&) {
  }
  TORCH_CHECK(parsed && value >= min && value <= max, "environment variable ", name,
              " must be an integer in [", min, ", ", max, "], got '", text, "'");
  return value;
}

// Runs a collective and waits for it; a failure names this rank and the operation.
void run_collective(const c10::intrusive_ptr<c10d::ProcessGroup>& group, const char* what,
                    const std::function<c10::intrusive_ptr<c10d::Work>()>& launch) {
  try {
    launch()->wait();
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "rank ", group->getRank(), " of ", group->getSize(), ": ", what,
                " failed (did another rank stop?): ", e.what_without_backtrace());
  }
}

}  // namespace

LaunchEnvironment LaunchEnvironment::from_env() {
  LaunchEnvironment launch;
  const bool has_rank = std::getenv("RANK") != nullptr;
  const bool has_world = std::getenv("WORLD_SIZE") != nullptr;
  TORCH_CHECK(has_rank == has_world,
              "a distributed launch sets both RANK and WORLD_SIZE (torchrun does); got only ",
              has_rank ? "RANK" : "WORLD_SIZE");
  if (!has_rank) return launch;
  constexpr int64_t kMaxRanks = std::numeric_limits<int32_t>::max();  // c10d ranks are int
  launch.world_size = env_integer("WORLD_SIZE", 1, 1, kMaxRanks);
  launch.rank = env_integer("RANK", 0, 0, launch.world_size - 1);
  launch.local_rank = env_integer("LOCAL_RANK", launch.rank, 0, launch.world_size - 1);
  if (launch.world_size == 1) return launch;
  const char* addr = std::getenv("MASTER_ADDR");
  TORCH_CHECK(addr != nullptr && *addr != '\0',
              "environment variable MASTER_ADDR must name rank 0's host for a launch of ",
              launch.world_size, " processes (torchrun sets it)");
  launch.master_addr = addr;
  TORCH_CHECK(std::getenv("MASTER_PORT") != nullptr,
              "environment variable MASTER_PORT must be set for a launch of ", launch.world_size,
              " processes (torchrun sets it)");
  launch.master_port = env_integer("MASTER_PORT", 0, 1, 65535);
  const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  launch.use_agent_store = agent_store != nullptr && std::string(agent_store) == "True";
  return launch;
}

#ifdef DUAL_ATTENTION_WITH_GLOO

bool is_available() { return true; }

c10::intrusive_ptr<c10d::ProcessGroup> init_process_group(const LaunchEnvironment& launch,
                                                          std::chrono::milliseconds timeout) {
  TORCH_CHECK(launch.world_size >= 1 && launch.rank >= 0 && launch.rank < launch.world_size,
              "init_process_group: need 0 <= rank < world_size, got rank ", launch.rank,
              " and world_size ", launch.world_size);
  TORCH_CHECK(timeout.count() > 0, "init_process_group: timeout must be positive, got ",
              timeout.count(), " ms");
  const int rank = static_cast<int>(launch.rank);
  const int size = static_cast<int>(launch.world_size);
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(launch.master_port);
  store_options.isServer = rank == 0 && !launch.use_agent_store;
  store_options.numWorkers = static_cast<size_t>(size);
  store_options.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, store_options);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "rank ", rank, " of ", size, ": the rendezvous at ", launch.master_addr, ":",
                launch.master_port, " failed: ", e.what_without_backtrace());
  }
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, size);
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
      store, rank, size, c10d::ProcessGroupGloo::Options::create_default(timeout));
  group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
#ifdef USE_C10D_NCCL
  if (torch::cuda::is_available()) {
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = timeout;
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>("nccl", store), rank, size, nccl_options);
    group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
  } else
#endif
  {
    group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::GLOO, gloo);
  }
  return group;
}

double all_reduce_mean(const c10::intrusive_ptr<c10d::ProcessGroup>& group, double value) {
  std::vector<torch::Tensor> tensors = {torch::tensor({value}, torch::kFloat64)};
  run_collective(group, "all_reduce", [&] { return group->allreduce(tensors); });
  return tensors[0].item<double>() / static_cast<double>(group->getSize());
}

void barrier(const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  run_collective(group, "barrier", [&] { return group->barrier(); });
}

DistributedDataParallel::DistributedDataParallel(
    std::vector<torch::Tensor> parameters, c10::intrusive_ptr<c10d::ProcessGroup> process_group,
    const DistributedDataParallelOptions& options, std::vector<torch::Tensor> buffers)
    : process_group_(std::move(process_group)) {
  TORCH_CHECK(process_group_, "DistributedDataParallel: process_group is null");
  TORCH_CHECK(!parameters.empty(), "DistributedDataParallel: parameters is empty");
  TORCH_CHECK(options.bucket_cap_mb() > 0 && options.first_bucket_cap_mb() > 0,
              "DistributedDataParallel: bucket_cap_mb and first_bucket_cap_mb must be positive, "
              "got ",
              options.bucket_cap_mb(), " and ", options.first_bucket_cap_mb());
  for (size_t i = 0; i < parameters.size(); ++i) {
    TORCH_CHECK(parameters[i].defined() && parameters[i].requires_grad(),
                "DistributedDataParallel: parameters[", i, "] must be a tensor that requires grad");
  }
  // Every rank starts from rank 0's weights (DDP's _sync_module_states).
  std::vector<torch::Tensor> state;
  for (const auto& p : parameters) state.push_back(p.detach());
  if (options.broadcast_buffers()) {
    for (const auto& b : buffers) state.push_back(b.detach());
  }
  for (auto& tensor : state) {
    std::vector<torch::Tensor> one = {tensor};
    run_collective(process_group_, "broadcast of the initial parameters",
                   [&] { return process_group_->broadcast(one); });
  }
  // Buckets in reverse order of the parameters, as DDP: the last layers' gradients are ready
  // first, so their bucket is reduced while the backward still runs through earlier layers.
  std::vector<torch::Tensor> reversed(parameters.rbegin(), parameters.rend());
  const auto mb = [](double megabytes) { return static_cast<size_t>(megabytes * 1024 * 1024); };
  auto [reversed_buckets, limits] = c10d::compute_bucket_assignment_by_size(
      reversed, {mb(options.first_bucket_cap_mb()), mb(options.bucket_cap_mb())});
  std::vector<std::vector<size_t>> buckets;
  for (const auto& bucket : reversed_buckets) {
    std::vector<size_t> indices;
    for (size_t i : bucket) indices.push_back(parameters.size() - 1 - i);
    buckets.push_back(std::move(indices));
  }
  num_buckets_ = static_cast<int64_t>(buckets.size());
  const size_t n = parameters.size();
  reducer_ = std::make_shared<c10d::Reducer>(
      std::move(parameters), std::move(buckets), process_group_, std::vector<bool>(n, false),
      static_cast<int64_t>(mb(options.bucket_cap_mb())),
      /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false,
      std::unordered_map<size_t, std::string>{},
      static_cast<int64_t>(mb(options.first_bucket_cap_mb())),
      /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
      std::vector<int64_t>(limits.begin(), limits.end()));
}

DistributedDataParallel::~DistributedDataParallel() = default;

void DistributedDataParallel::prepare_for_backward(const torch::Tensor& loss) {
  TORCH_CHECK(loss.defined() && loss.requires_grad(),
              "DistributedDataParallel::prepare_for_backward: loss must be a tensor that "
              "requires grad");
  // Every rank calls this at the same step, so the collective inside rebuild_buckets (which
  // reorders the buckets once, by the order gradients arrived in the first backward) matches.
  reducer_->rebuild_buckets();
  reducer_->prepare_for_forward();
  reducer_->prepare_for_backward({loss});
}

#else  // built without gloo's headers

bool is_available() { return false; }

namespace {
[[noreturn]] void unavailable(const char* what) {
  TORCH_CHECK(false, what,
              ": this build of dual_attention has no data parallelism: CMake did not find gloo's "
              "headers (Debian: apt install libgloo-dev), then reconfigure");
}
}  // namespace

c10::intrusive_ptr<c10d::ProcessGroup> init_process_group(const LaunchEnvironment&,
                                                          std::chrono::milliseconds) {
  unavailable("init_process_group");
}
double all_reduce_mean(const c10::intrusive_ptr<c10d::ProcessGroup>&, double) {
  unavailable("all_reduce_mean");
}
void barrier(const c10::intrusive_ptr<c10d::ProcessGroup>&) { unavailable("barrier"); }
DistributedDataParallel::DistributedDataParallel(std::vector<torch::Tensor>,
                                                 c10::intrusive_ptr<c10d::ProcessGroup>,
                                                 const DistributedDataParallelOptions&,
                                                 std::vector<torch::Tensor>) {
  unavailable("DistributedDataParallel");
}
DistributedDataParallel::~DistributedDataParallel() = default;
void DistributedDataParallel::prepare_for_backward(const torch::Tensor&) {
  unavailable("DistributedDataParallel::prepare_for_backward");
}

#endif

}  // namespace dual_attention::distributed
