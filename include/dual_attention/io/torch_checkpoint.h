// State dicts saved by torch.save (`pytorch_model.bin`, what huggingface_hub's mixin falls back to
// when a repository has no model.safetensors), read without Python and without running any pickled
// code.
//
// torch.save (PyTorch >= 1.6) writes a zip archive: <archive>/data.pkl, a pickle of the object
// whose tensors refer to storages, and <archive>/data/<key>, the raw little-endian bytes of each
// storage. LibTorch's own reader reads it: caffe2::serialize::PyTorchStreamReader for the zip and
// torch::jit::Unpickler for the pickle. That unpickler creates no Python objects: it knows
// tensors, storages and plain containers, and refuses any other class, since it is given no type
// resolver. What it returns is then checked here, before a byte of tensor data is read: it must
// be a dict of str -> dense CPU tensor (what model.state_dict() gives, as torch.load(...,
// weights_only=True) accepts it), and every tensor must lie inside the bytes its storage record
// really holds (LibTorch trusts the element count written in the pickle).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

namespace dual_attention::io {

// The state dict in the torch.save zip archive at `path`, tensors on the CPU with the stored
// dtypes; tensors that shared a storage in the file share it here. Raises c10::Error naming the
// file and the problem for: a file that is not a zip archive (the legacy pre-1.6 format included),
// a damaged archive, records that claim more bytes than the file holds (compressed records, as
// torch.save never writes), a pickle that is not a dict of str -> tensor (any other object,
// class or container is refused), and tensors whose extent exceeds their storage record.
std::map<std::string, torch::Tensor> load_torch_state_dict(const std::string& path);

}  // namespace dual_attention::io
