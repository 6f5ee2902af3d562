// Data-parallel training from C++ on LibTorch's c10d, as torch.distributed does it in Python.
//
//   auto launch = distributed::LaunchEnvironment::from_env();    // what torchrun set
//   auto group = distributed::init_process_group(launch);        // TCPStore + gloo
//   distributed::DistributedDataParallel ddp(distinct_parameters(*model), group);
//   for (...) {
//     auto loss = ...;                  // the mean over this rank's part of the global batch
//     ddp.prepare_for_backward(loss);   // skip it on micro-batches that only accumulate
//     loss.backward();                  // gradients now the mean over every rank's part
//     optimizer.step();
//   }
//
// Nothing here communicates by itself: the rendezvous is c10d's TCPStore, the collectives are
// c10d's ProcessGroupGloo (CPU tensors; CUDA tensors too when ProcessGroupNCCL is not compiled
// in), and the bucketed, overlapped gradient all-reduce is c10d::Reducer, the engine inside
// torch.nn.parallel.DistributedDataParallel. docs/distributed.md explains how the library is
// built against ProcessGroupGloo although the torch wheel lacks gloo's headers.
//
// Errors are c10::Error: a malformed launch variable names the variable, its value and what was
// expected; a collective that fails (another rank died, or a timeout passed) names this rank and
// the operation, followed by c10d's own message.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <vector>

namespace c10d {
class Reducer;
}  // namespace c10d

namespace dual_attention::distributed {

// Whether this build can run data parallel: false when the library was compiled without gloo's
// headers (CMake prints so), in which case init_process_group raises.
bool is_available();

// The variables torchrun (torch.distributed.run) sets for each worker process.
struct LaunchEnvironment {
  int64_t rank = 0;                       // RANK: this process, in [0, world_size)
  int64_t world_size = 1;                 // WORLD_SIZE: processes in the job
  int64_t local_rank = 0;                 // LOCAL_RANK: this process on its node (picks the GPU)
  std::string master_addr = "127.0.0.1";  // MASTER_ADDR: host of rank 0's TCPStore
  int64_t master_port = 29500;            // MASTER_PORT: its port
  // TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already hosts the TCPStore at
  // MASTER_PORT, so rank 0 joins it as a client instead of hosting one.
  bool use_agent_store = false;

  // Reads the five variables. None set: one process (the defaults). RANK and WORLD_SIZE set:
  // a distributed launch, which also needs MASTER_ADDR and MASTER_PORT; LOCAL_RANK defaults to
  // RANK. A malformed or partial set raises, naming the variable.
  static LaunchEnvironment from_env();
  bool is_distributed() const { return world_size > 1; }
};

// The process group of a launch: rank 0 hosts a c10d::TCPStore at master_addr:master_port that
// every rank joins, then a ProcessGroupGloo (and a ProcessGroupNCCL for CUDA tensors where
// LibTorch has it) over that store. `timeout` bounds the rendezvous and every collective: a rank
// whose peer died fails with an error instead of waiting forever (gloo usually notices a closed
// connection at once).
c10::intrusive_ptr<c10d::ProcessGroup> init_process_group(
    const LaunchEnvironment& launch, std::chrono::milliseconds timeout = std::chrono::minutes(30));

// The mean of `value` over the ranks of `group` (for logging losses).
double all_reduce_mean(const c10::intrusive_ptr<c10d::ProcessGroup>& group, double value);

// Waits until every rank of `group` arrives.
void barrier(const c10::intrusive_ptr<c10d::ProcessGroup>& group);

// torch.nn.parallel.DistributedDataParallel's keywords that apply here.
struct DistributedDataParallelOptions {
  TORCH_ARG(double, bucket_cap_mb) = 25.0;     // gradient bytes per all-reduce bucket
  TORCH_ARG(double, first_bucket_cap_mb) = 1;  // the first bucket (the last layers' gradients)
  TORCH_ARG(bool, broadcast_buffers) = true;   // copy rank 0's buffers too at construction
};

// Data parallelism over `parameters` (each tensor once: training::distinct_parameters), with
// c10d::Reducer. Construction broadcasts rank 0's parameters (and the given buffers) so that every
// rank starts from the same model. After prepare_for_backward(loss), loss.backward() all-reduces
// the gradients in buckets of bucket_cap_mb, each launched as soon as its gradients are ready,
// and leaves in every parameter's .grad the mean over ranks: with each rank's loss the mean over
// its part of a global batch, that is the gradient of the global batch's mean loss.
//
// Gradient accumulation: call prepare_for_backward only before the last micro-batch's backward
// (as DDP's no_sync); the all-reduce then averages the accumulated gradients. Every parameter
// must receive a gradient in that backward (find_unused_parameters is off).
class DistributedDataParallel {
 public:
  DistributedDataParallel(std::vector<torch::Tensor> parameters,
                          c10::intrusive_ptr<c10d::ProcessGroup> process_group,
                          const DistributedDataParallelOptions& options = {},
                          std::vector<torch::Tensor> buffers = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Arms the next backward of `loss` (a tensor that requires grad) to all-reduce.
  void prepare_for_backward(const torch::Tensor& loss);
  const c10::intrusive_ptr<c10d::ProcessGroup>& process_group() const { return process_group_; }
  int64_t num_buckets() const { return num_buckets_; }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> process_group_;
  std::shared_ptr<c10d::Reducer> reducer_;
  int64_t num_buckets_ = 0;
};

}  // namespace dual_attention::distributed
