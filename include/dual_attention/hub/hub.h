// Downloads files from the Hugging Face Hub into the cache that huggingface_hub uses, so that a
// file fetched by Python is found here without a request and the other way round.
//
//   namespace hub = dual_attention::hub;
//   std::string config = hub::hf_hub_download("awni00/DAT-sa8-ra8-ns1024-sh8-nkvh4-343M",
//                                             "config.json");
//   std::string folder = hub::snapshot_download(repo_id, {"config.json", "model.safetensors"});
//
// Cache layout, identical to huggingface_hub's (under HF_HUB_CACHE):
//   models--{org}--{name}/blobs/<etag>                   contents, named by git oid or sha256
//   models--{org}--{name}/snapshots/<commit>/<filename>  relative links to ../../blobs/<etag>
//   models--{org}--{name}/refs/<revision>                the commit a branch or tag pointed at
//   models--{org}--{name}/.no_exist/<commit>/<filename>  a file known not to exist
//   .locks/models--{org}--{name}/<etag>.lock             flock(2)'ed by both around a transfer
// A transfer streams into blobs/<etag>.incomplete (the name older huggingface_hub releases used
// and `scan_cache_dir` reports); huggingface_hub 2.x writes to its own <etag>.<random>.incomplete
// under the same lock, so the two never share a partial file.
//
// Environment, read at each call (huggingface_hub reads it once, at import): HF_HOME, HF_HUB_CACHE
// (or HUGGINGFACE_HUB_CACHE), XDG_CACHE_HOME, HF_ENDPOINT, HF_TOKEN (or HUGGING_FACE_HUB_TOKEN),
// HF_TOKEN_PATH (default $HF_HOME/token), HF_HUB_DISABLE_IMPLICIT_TOKEN, HF_HUB_OFFLINE (or
// TRANSFORMERS_OFFLINE), HF_HUB_DISABLE_PROGRESS_BARS, HF_HUB_ETAG_TIMEOUT,
// HF_HUB_DOWNLOAD_TIMEOUT. libcurl honours http_proxy / https_proxy / no_proxy.
//
// Errors: every failure to produce the file is a HubError (a std::runtime_error: the hub layer does
// not depend on torch) whose message starts "hub: '<file>' of '<repo>' at revision '<rev>': " and
// whose accessors give the three; the subclasses below say why. Invalid arguments (a malformed repo
// id, a filename or revision that escapes the cache) are std::invalid_argument.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace dual_attention::hub {

struct DownloadOptions {
  // A branch, a tag or a commit hash; unset means "main".
  std::optional<std::string> revision;
  // Sent as `Authorization: Bearer <token>` to the Hub (never to a CDN). Unset: HF_TOKEN, then the
  // token file, unless HF_HUB_DISABLE_IMPLICIT_TOKEN is set. An empty string sends no token.
  std::optional<std::string> token;
  // Unset: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
  std::optional<std::string> cache_dir;
  // Unset: HF_ENDPOINT, else https://huggingface.co.
  std::optional<std::string> endpoint;
  // Never touch the network; HF_HUB_OFFLINE=1 means the same.
  bool local_files_only = false;
  // Download again even if the file is cached.
  bool force_download = false;
  // A progress bar on stderr for files over 4 MiB; shown only when stderr is a terminal.
  bool progress = true;
  // How many times a dropped transfer is resumed (with a Range request) within one call. A partial
  // file that is still left over is resumed by the next call.
  int max_retries = 5;
};

// ---- errors ------------------------------------------------------------------------------------
class HubError : public std::runtime_error {
 public:
  HubError(const std::string& message, std::string repo_id, std::string filename,
           std::string revision);
  const std::string& repo_id() const { return repo_id_; }
  const std::string& filename() const { return filename_; }
  const std::string& revision() const { return revision_; }
  const char* what() const noexcept override { return message_.c_str(); }
  // Appends a sentence to the message, keeping the error's type: a caller that knows more (that
  // the repo id was perhaps a mistyped local folder) adds it and rethrows with `throw;`.
  void add_note(const std::string& note) { message_ += "; " + note; }

 private:
  std::string message_;
  std::string repo_id_, filename_, revision_;
};

// The repository does not exist (404 or X-Error-Code RepoNotFound), or is private and hidden.
class RepositoryNotFoundError : public HubError {
 public:
  using HubError::HubError;
};
// The branch, tag or commit does not exist in the repository.
class RevisionNotFoundError : public HubError {
 public:
  using HubError::HubError;
};
// The file does not exist at that revision.
class EntryNotFoundError : public HubError {
 public:
  using HubError::HubError;
};
// 401 / 403: a valid token with access to the repository is needed.
class UnauthorizedError : public HubError {
 public:
  using HubError::HubError;
};
// The repository is gated and the token given (if any) has not been granted access.
class GatedRepoError : public UnauthorizedError {
 public:
  using UnauthorizedError::UnauthorizedError;
};
// Offline (HF_HUB_OFFLINE or local_files_only) and the file is not in the cache.
class LocalEntryNotFoundError : public HubError {
 public:
  using HubError::HubError;
};
// The Hub could not be reached, or the transfer broke and could not be resumed; nothing cached.
class NetworkError : public HubError {
 public:
  using HubError::HubError;
};
// No space left (ENOSPC, EDQUOT) or the file size limit was hit (EFBIG) while writing the cache.
class DiskFullError : public HubError {
 public:
  using HubError::HubError;
};
// The downloaded bytes do not match the announced size or, for LFS files, the sha256 etag.
class ConsistencyError : public HubError {
 public:
  using HubError::HubError;
};
// The server's answer lacks X-Repo-Commit or an ETag: HF_ENDPOINT is not a Hub.
class FileMetadataError : public HubError {
 public:
  using HubError::HubError;
};

// Any other HTTP error status (5xx, 400, 429, ...).
class HttpError : public HubError {
 public:
  HttpError(const std::string& message, std::string repo_id, std::string filename,
            std::string revision, long status);
  long status() const { return status_; }

 private:
  long status_;
};

// ---- downloads ---------------------------------------------------------------------------------

// The local path of `filename` (a '/'-separated path inside the repo) at `options.revision`: a
// symlink in snapshots/<commit>/. A cached file costs one HEAD request (none for a commit hash,
// none offline); an uncached one is streamed to blobs/<etag>.incomplete under the lock, resumed
// with a Range request if a partial file is there, checked (size, sha256 for LFS files) and renamed
// into blobs/ before the snapshot link is made, so that a failure never leaves a corrupt blob or a
// dangling link. When the Hub cannot be reached (or answers with an error other than "no such
// revision / file"), a cached copy of the revision is returned, as huggingface_hub does.
std::string hf_hub_download(const std::string& repo_id, const std::string& filename,
                            const DownloadOptions& options = {});

// Downloads `filenames` from one commit (the revision is resolved by the first file) and returns
// the snapshot folder snapshots/<commit>. Unlike huggingface_hub's snapshot_download it does not
// list the repository: it fetches exactly the files named.
std::string snapshot_download(const std::string& repo_id, const std::vector<std::string>& filenames,
                              const DownloadOptions& options = {});

// ---- cache helpers -----------------------------------------------------------------------------

// The cache folder the environment selects (HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
std::string default_cache_dir();
// "models--org--name".
std::string repo_folder_name(const std::string& repo_id);
// {endpoint}/{repo_id}/resolve/{revision}/{filename}, percent-encoded as huggingface_hub does.
std::string hf_hub_url(const std::string& repo_id, const std::string& filename,
                       const std::string& revision = "main", const std::string& endpoint = "");
// The cached path of a file at a revision (branch/tag through refs/, or commit), without any
// request; nullopt when it is not cached.
std::optional<std::string> try_to_load_from_cache(const std::string& repo_id,
                                                  const std::string& filename,
                                                  const std::string& revision = "main",
                                                  const std::string& cache_dir = "");

}  // namespace dual_attention::hub
