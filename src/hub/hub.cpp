// The Hub download, step for step as huggingface_hub 2.x does it (file_download.py), so that both
// share one cache: HEAD /resolve for the commit and etag, blobs/<etag> + snapshots/<commit>/<file>
// symlinks + refs/<revision>, and the same flock'ed .locks/<folder>/<etag>.lock around the
// transfer. Where we go further (resuming a partial file left by an earlier call, checking the
// sha256 of LFS files, failing early when the disk is too small) the cache stays readable by
// huggingface_hub.
#include "dual_attention/hub/hub.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "http.h"
#include "progress.h"
#include "sha256.h"

namespace dual_attention::hub {

namespace fs = std::filesystem;
using detail::HttpRequest;
using detail::HttpResponse;
using detail::TransferError;

HubError::HubError(const std::string& message, std::string repo_id, std::string filename,
                   std::string revision)
    : std::runtime_error(""),
      message_("hub: '" + filename + "' of '" + repo_id + "' at revision '" + revision +
               "': " + message),
      repo_id_(std::move(repo_id)),
      filename_(std::move(filename)),
      revision_(std::move(revision)) {}

HttpError::HttpError(const std::string& message, std::string repo_id, std::string filename,
                     std::string revision, long status)
    : HubError(message, std::move(repo_id), std::move(filename), std::move(revision)),
      status_(status) {}

namespace {

constexpr const char* kDefaultEndpoint = "https://huggingface.co";
constexpr const char* kTokenHint =
    "pass a valid token (the token argument, HF_TOKEN, or the token file $HF_HOME/token written "
    "by `hf auth login`)";

// ---- environment -------------------------------------------------------------------------------

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

// huggingface_hub's _is_true: "1", "ON", "YES", "TRUE" in any case.
bool is_true(const std::optional<std::string>& value) {
  if (!value) return false;
  std::string upper = *value;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  return upper == "1" || upper == "ON" || upper == "YES" || upper == "TRUE";
}

// Set and not empty, as Python's `os.environ.get(a) or os.environ.get(b)` sees it.
std::optional<std::string> env_either(const char* name, const char* fallback) {
  auto value = env(name);
  if (value && !value->empty()) return value;
  return env(fallback);
}

std::string home_dir() {
  if (auto home = env("HOME"); home && !home->empty()) return *home;
  if (const passwd* pw = getpwuid(getuid())) return pw->pw_dir;
  return "/";
}

// os.path.expanduser for "~" and "~/..."
std::string expand_user(const std::string& path) {
  if (path == "~" || path.rfind("~/", 0) == 0) return home_dir() + path.substr(1);
  return path;
}

// os.path.expandvars: $NAME and ${NAME}; unknown variables are left as they are.
std::string expand_vars(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '$') {
      out += text[i++];
      continue;
    }
    size_t start = i + 1;
    bool braced = start < text.size() && text[start] == '{';
    size_t name_begin = braced ? start + 1 : start;
    size_t name_end = name_begin;
    while (name_end < text.size() &&
           (std::isalnum(static_cast<unsigned char>(text[name_end])) || text[name_end] == '_'))
      ++name_end;
    bool closed = !braced || (name_end < text.size() && text[name_end] == '}');
    std::string name = text.substr(name_begin, name_end - name_begin);
    auto value = name.empty() || !closed ? std::nullopt : env(name.c_str());
    size_t next = braced ? name_end + 1 : name_end;
    if (value) {
      out += *value;
      i = next;
    } else {
      out += text[i++];
    }
  }
  return out;
}

std::string expand(const std::string& path) { return expand_vars(expand_user(path)); }

std::string hf_home() {
  if (auto home = env("HF_HOME")) return expand(*home);
  std::string cache_home = env("XDG_CACHE_HOME").value_or(home_dir() + "/.cache");
  return expand(cache_home + "/huggingface");
}

bool offline_from_env() { return is_true(env_either("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")); }

long seconds_from_env(const char* name, long fallback) {
  auto value = env(name);
  if (!value) return fallback;
  char* end = nullptr;
  long seconds = std::strtol(value->c_str(), &end, 10);
  return (end && *end == '\0' && seconds > 0) ? seconds : fallback;
}

// huggingface_hub's _clean_token: no CR/LF, no surrounding blanks; empty means none.
std::optional<std::string> clean_token(std::optional<std::string> token) {
  if (!token) return std::nullopt;
  std::string t;
  for (char c : *token)
    if (c != '\r' && c != '\n') t += c;
  size_t b = t.find_first_not_of(" \t");
  if (b == std::string::npos) return std::nullopt;
  return t.substr(b, t.find_last_not_of(" \t") - b + 1);
}

std::optional<std::string> token_to_send(const DownloadOptions& options) {
  if (options.token) {
    if (options.token->empty()) return std::nullopt;
    return options.token;
  }
  if (is_true(env("HF_HUB_DISABLE_IMPLICIT_TOKEN"))) return std::nullopt;
  if (auto token = clean_token(env_either("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"))) return token;
  std::string path = expand(env("HF_TOKEN_PATH").value_or(hf_home() + "/token"));
  std::ifstream file(path);
  if (!file) return std::nullopt;
  std::stringstream text;
  text << file.rdbuf();
  return clean_token(text.str());
}

std::string endpoint_of(const DownloadOptions& options) {
  std::string endpoint = options.endpoint.value_or(env("HF_ENDPOINT").value_or(kDefaultEndpoint));
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  return endpoint;
}

// ---- validation --------------------------------------------------------------------------------

bool is_commit_hash(const std::string& s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(),
                                       [](char c) { return std::isxdigit(c) && !std::isupper(c); });
}

bool is_sha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(),
                                       [](char c) { return std::isxdigit(c) && !std::isupper(c); });
}

// huggingface_hub's validate_repo_id: "name" or "namespace/name", letters, digits, '-', '_', '.'.
void check_repo_id(const std::string& repo_id) {
  auto part_ok = [](const std::string& part) {
    return !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    });
  };
  size_t slash = repo_id.find('/');
  bool ok = repo_id.size() <= 96 && repo_id.find("--") == std::string::npos &&
            repo_id.find("..") == std::string::npos &&
            (slash == std::string::npos
                 ? part_ok(repo_id)
                 : part_ok(repo_id.substr(0, slash)) && part_ok(repo_id.substr(slash + 1)));
  if (!ok)
    throw std::invalid_argument(
        "hub: repo_id '" + repo_id +
        "' is not valid: expected 'name' or 'namespace/name' (letters, digits, '-', '_', '.'; "
        "no '--' or '..'; at most 96 characters)");
}

// A '/'-separated path that stays inside its folder: no '..' segment, not absolute, no NUL.
void check_relative(const std::string& what, const std::string& value) {
  bool ok = !value.empty() && value[0] != '/' && value[0] != '\\' &&
            value.find('\0') == std::string::npos;
  std::string segment;
  std::stringstream parts(value);
  while (ok && std::getline(parts, segment, '/')) ok = segment != ".." && segment.find('\\') != 0;
  if (value.find("\\..") != std::string::npos || value.find("..\\") != std::string::npos)
    ok = false;
  if (!ok)
    throw std::invalid_argument("hub: " + what + " '" + value +
                                "' is not valid: expected a non-empty relative path without '..'");
}

// What a server tells us becomes a path component: keep it to one plain name.
bool safe_component(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.size() <= 255 &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
         });
}

// huggingface_hub's _normalize_etag: etag.lstrip("W/").strip('"').
std::string normalize_etag(std::string etag) {
  size_t b = etag.find_first_not_of("W/");
  etag = b == std::string::npos ? "" : etag.substr(b);
  b = etag.find_first_not_of('"');
  if (b == std::string::npos) return "";
  return etag.substr(b, etag.find_last_not_of('"') - b + 1);
}

// ---- the cache on disk -------------------------------------------------------------------------

struct Target {
  std::string repo_id, filename, revision;
  fs::path cache_dir, storage;  // storage = cache_dir / models--org--name

  fs::path pointer(const std::string& commit) const {
    return storage / "snapshots" / commit / fs::path(filename);
  }
  fs::path no_exist(const std::string& commit) const {
    return storage / ".no_exist" / commit / fs::path(filename);
  }
};

std::string random_hex8() {
  static thread_local std::mt19937 rng(std::random_device{}() ^
                                       static_cast<unsigned>(getpid() * 2654435761u));
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", static_cast<unsigned>(rng()));
  return buf;
}

std::optional<std::string> read_ref(const Target& t, const std::string& revision) {
  std::ifstream file(t.storage / "refs" / fs::path(revision));
  if (!file) return std::nullopt;
  std::string commit;
  file >> commit;
  if (!safe_component(commit)) return std::nullopt;
  return commit;
}

// refs/<revision> holds the commit a branch, tag or short hash resolved to; written through a
// temporary file and a rename so that a reader never sees half of it.
void write_ref(const Target& t, const std::string& commit) {
  if (t.revision == commit || read_ref(t, t.revision) == commit) return;
  fs::path ref = t.storage / "refs" / fs::path(t.revision);
  fs::create_directories(ref.parent_path());
  fs::path tmp = ref;
  tmp += "." + random_hex8() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << commit;
    out.close();
    if (!out) {
      fs::remove(tmp);
      throw fs::filesystem_error("cannot write the ref", tmp,
                                 std::error_code(EIO, std::generic_category()));
    }
  }
  fs::rename(tmp, ref);
}

struct Resolved {
  fs::path pointer;
  std::string commit;
};

// The cached file for the revision (commit hash, or branch / tag through refs/), if any.
std::optional<Resolved> find_in_cache(const Target& t) {
  std::optional<std::string> commit =
      is_commit_hash(t.revision) ? std::optional<std::string>(t.revision) : read_ref(t, t.revision);
  if (!commit) return std::nullopt;
  fs::path pointer = t.pointer(*commit);
  std::error_code ec;
  if (fs::exists(pointer, ec)) return Resolved{pointer, *commit};  // a dangling link does not count
  return std::nullopt;
}

std::optional<std::string> known_missing(const Target& t) {
  std::optional<std::string> commit =
      is_commit_hash(t.revision) ? std::optional<std::string>(t.revision) : read_ref(t, t.revision);
  std::error_code ec;
  if (commit && fs::is_regular_file(t.no_exist(*commit), ec)) return commit;
  return std::nullopt;
}

// The snapshot entry, a relative symlink into blobs/, made next to its place and renamed over it so
// that it appears whole.
void link_pointer(const fs::path& blob, const fs::path& pointer) {
  fs::create_directories(pointer.parent_path());
  fs::path target = blob.lexically_relative(pointer.parent_path());
  fs::path tmp =
      pointer.parent_path() / ("." + pointer.filename().string() + "." + random_hex8() + ".tmp");
  fs::create_symlink(target, tmp);
  std::error_code ec;
  fs::rename(tmp, pointer, ec);
  if (ec) {
    fs::remove(tmp);
    throw fs::filesystem_error("cannot create the snapshot link", pointer, ec);
  }
}

void write_cachedir_tag(const fs::path& cache_dir) {
  fs::path tag = cache_dir / "CACHEDIR.TAG";
  std::error_code ec;
  if (fs::exists(tag, ec)) return;
  std::ofstream out(tag);
  out << "Signature: 8a477f597d28d172789f06886806bc55\n"
         "# This file is a cache directory tag created by huggingface_hub.\n"
         "# For information about cache directory tags, see:\n"
         "#\thttps://bford.info/cachedir/\n";
}

// An exclusive flock(2) on the lock file huggingface_hub uses (filelock's UnixFileLock): the file
// stays in place so that every process locks the same inode.
class FileLock {
 public:
  explicit FileLock(const fs::path& path) {
    fs::create_directories(path.parent_path());
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0664);
    if (fd_ < 0) throw fs::filesystem_error("cannot open the lock file", path, last_error());
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        auto ec = last_error();
        ::close(fd_);
        throw fs::filesystem_error("cannot lock", path, ec);
      }
    }
  }
  ~FileLock() { ::close(fd_); }  // closing the descriptor releases the lock
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  static std::error_code last_error() { return std::error_code(errno, std::generic_category()); }
  int fd_ = -1;
};

// A byte count from a header; -1 when absent or not a number.
int64_t parse_size(const std::string* text) {
  if (!text || text->empty() || text->size() > 18 ||
      !std::all_of(text->begin(), text->end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(*text);
}

bool is_disk_full(int err) { return err == ENOSPC || err == EDQUOT || err == EFBIG; }

// ---- talking to the Hub ------------------------------------------------------------------------

struct Metadata {
  std::string commit, etag, location;
  int64_t size = -1;  // -1: unknown
};

struct Session {
  const Target& t;
  const DownloadOptions& options;
  std::string endpoint;
  std::optional<std::string> token;

  // The trusted origins: the auth header may go there, redirects there are followed.
  bool same_or_hub_origin(const std::string& from, const std::string& to) const {
    auto o = detail::url_origin(to);
    for (const std::string& hub :
         {from, endpoint, std::string(kDefaultEndpoint),
          std::string("https://hub-ci.huggingface.co"), std::string("https://hf.co")})
      if (o == detail::url_origin(hub)) return true;
    return false;
  }

  std::vector<std::string> headers(bool with_token) const {
    std::vector<std::string> h = {"User-Agent: dual-attention-cpp; " + detail::libcurl_version(),
                                  "X-HF-Download-Counter: 1"};
    if (with_token && token) h.push_back("Authorization: Bearer " + *token);
    return h;
  }

  template <class Error>
  [[noreturn]] void fail(const std::string& message) const {
    throw Error(message, t.repo_id, t.filename, t.revision);
  }

  // Maps an HTTP error answer to the typed errors, as hf_raise_for_status does.
  [[noreturn]] void fail_http(const HttpResponse& r) const {
    const std::string* code = r.header("x-error-code");
    const std::string* server_message = r.header("x-error-message");
    std::string where = "(HTTP " + std::to_string(r.status) + " from " + r.url +
                        (code ? ", X-Error-Code " + *code : "") +
                        (server_message ? ": " + *server_message : "") + ")";
    std::string c = code ? *code : "";
    if (c == "RevisionNotFound")
      fail<RevisionNotFoundError>("revision not found " + where +
                                  "; check the branch, tag or commit hash");
    if (c == "EntryNotFound")
      fail<EntryNotFoundError>("file not found in the repository at this revision " + where);
    if (c == "GatedRepo")
      fail<GatedRepoError>(
          "the repository is gated and a valid token of an account that was "
          "granted access is needed " +
          where + "; " + kTokenHint);
    if (c == "RepoNotFound")
      fail<RepositoryNotFoundError>("repository not found " + where +
                                    "; check the repo id, and if the repository is private or "
                                    "gated, " +
                                    kTokenHint);
    if (r.status == 401 || r.status == 403)
      fail<UnauthorizedError>(std::string("access denied, a valid token is needed ") + where +
                              "; " + kTokenHint);
    throw HttpError("the Hub answered with an error " + where, t.repo_id, t.filename, t.revision,
                    r.status);
  }

  [[noreturn]] void fail_transfer(const TransferError& e, const std::string& url) const {
    fail<NetworkError>("cannot reach " + url + " (" + e.what() +
                       ") and the file is not in the cache at " + t.storage.string() +
                       "; check the connection, HF_ENDPOINT and proxy settings, or set "
                       "HF_HUB_OFFLINE=1 to use cached files only");
  }

  // HEAD /resolve, following redirects that stay on the Hub (relative ones included) and stopping
  // at the first one that leaves it (the CDN): that answer carries the metadata.
  Metadata fetch_metadata() const {
    std::string url = hf_hub_url(t.repo_id, t.filename, t.revision, endpoint);
    HttpRequest request;
    request.method = "HEAD";
    request.headers = headers(true);
    request.headers.push_back("Accept-Encoding: identity");
    request.connect_timeout_s = request.total_timeout_s =
        seconds_from_env("HF_HUB_ETAG_TIMEOUT", 10);
    HttpResponse r;
    for (int hop = 0;; ++hop) {
      if (hop == 10) fail<HubError>("more than 10 redirects while resolving " + url);
      request.url = url;
      try {
        r = detail::http_request(request);
      } catch (const TransferError& e) {
        fail_transfer(e, url);
      }
      if (r.status >= 400) {
        if (r.status == 404 && r.header("x-error-code") &&
            *r.header("x-error-code") == "EntryNotFound")
          remember_missing(r);
        fail_http(r);
      }
      if (!r.is_redirect()) break;
      std::string next = detail::url_join(url, *r.header("location"));
      if (!same_or_hub_origin(url, next)) break;
      url = next;
    }
    Metadata m;
    const std::string* commit = r.header("x-repo-commit");
    if (!commit || !safe_component(*commit))
      fail<FileMetadataError>(
          "the answer from " + url + " has no valid X-Repo-Commit header, so " + endpoint +
          " does not seem to be a Hugging Face Hub (check HF_ENDPOINT, proxies and certificates)");
    m.commit = *commit;
    const std::string* etag =
        r.header("x-linked-etag") ? r.header("x-linked-etag") : r.header("etag");
    m.etag = etag ? normalize_etag(*etag) : "";
    if (!safe_component(m.etag))
      fail<FileMetadataError>("the answer from " + url +
                              " has no usable ETag, so the file cannot be cached reliably");
    m.location = r.is_redirect() ? detail::url_join(url, *r.header("location")) : url;
    const std::string* size = r.header("x-linked-size");
    if (!size && !r.is_redirect()) size = r.header("content-length");
    m.size = parse_size(size);
    return m;
  }

  // huggingface_hub caches the absence of a file as .no_exist/<commit>/<filename>.
  void remember_missing(const HttpResponse& r) const {
    const std::string* commit = r.header("x-repo-commit");
    if (!commit || !safe_component(*commit)) return;
    std::error_code ec;
    fs::create_directories(t.no_exist(*commit).parent_path(), ec);
    if (!ec) std::ofstream(t.no_exist(*commit)).flush();
    try {
      write_ref(t, *commit);
    } catch (const std::exception&) {  // best effort, as in huggingface_hub
    }
  }

  // Streams the file into blobs/<etag>.incomplete (resuming what is there), checks it and renames
  // it to blobs/<etag>. Called with the lock held.
  void download_blob(const Metadata& m, const fs::path& blob) const {
    fs::path incomplete = blob;
    incomplete += ".incomplete";
    int64_t expected = m.size;
    std::error_code ec;
    int64_t have = fs::exists(incomplete, ec) ? int64_t(fs::file_size(incomplete, ec)) : 0;
    if (ec || options.force_download || (expected >= 0 && have > expected)) have = 0;
    if (expected >= 0) check_free_space(blob.parent_path(), expected - have, incomplete, have);

    int fd = ::open(incomplete.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
      throw fs::filesystem_error("cannot create", incomplete,
                                 std::error_code(errno, std::generic_category()));
    struct Closer {
      int fd;
      ~Closer() {
        if (fd >= 0) ::close(fd);
      }
    } closer{fd};
    if (::ftruncate(fd, have) != 0)  // drops what is not reused (force_download, a stale partial)
      throw fs::filesystem_error("cannot truncate", incomplete,
                                 std::error_code(errno, std::generic_category()));

    // The sha256 of an LFS file is checked as the bytes arrive; a resumed file's prefix first.
    const bool check_sha = is_sha256(m.etag);
    detail::Sha256 sha;
    if (check_sha && have > 0) {
      std::vector<char> buf(1 << 20);
      for (int64_t off = 0; off < have;) {
        ssize_t n = ::pread(fd, buf.data(), std::min<int64_t>(buf.size(), have - off), off);
        if (n <= 0) {  // unreadable: start from scratch
          sha.reset();
          have = 0;
          if (::ftruncate(fd, 0) != 0)
            throw fs::filesystem_error("cannot truncate", incomplete,
                                       std::error_code(errno, std::generic_category()));
          break;
        }
        sha.update(buf.data(), n);
        off += n;
      }
    }

    const bool send_token =
        same_or_hub_origin(hf_hub_url(t.repo_id, t.filename, t.revision, endpoint), m.location);
    detail::ProgressBar bar(t.filename, expected, have,
                            options.progress && !is_true(env("HF_HUB_DISABLE_PROGRESS_BARS")));
    int retries_left = options.max_retries;
    int write_errno = 0;
    bool oversize = false, bad_range = false;
    auto restart = [&] {
      if (::ftruncate(fd, 0) != 0) write_errno = errno;
      have = 0;
      sha.reset();
      bar.restart(0);
    };

    // Nothing left to fetch needs no GET (an empty file, say), as in huggingface_hub.
    const int64_t resumed_from = have;
    auto fetch = [&] {
      while (!(expected >= 0 && have == expected)) {
        HttpRequest request;
        request.url = m.location;
        request.follow_redirects = true;
        request.headers = headers(send_token);
        if (have > 0) request.headers.push_back("Range: bytes=" + std::to_string(have) + "-");
        request.connect_timeout_s = request.stall_timeout_s =
            seconds_from_env("HF_HUB_DOWNLOAD_TIMEOUT", 10);
        const int64_t at_start = have;
        detail::BodySink sink;
        sink.begin = [&](const HttpResponse& r) {
          if (r.status == 200 && have > 0) {
            restart();  // the server ignored the Range header: start over
          } else if (r.status == 206) {
            const std::string* range = r.header("content-range");  // "bytes START-END/TOTAL"
            bad_range = !range || range->rfind("bytes " + std::to_string(have) + "-", 0) != 0;
          }
          if (expected < 0) {  // the HEAD gave no size: take it from this answer
            const std::string* range = r.header("content-range");
            if (r.status == 206 && range && range->find('/') != std::string::npos) {
              std::string total = range->substr(range->find('/') + 1);
              expected = parse_size(&total);
            } else if (r.status == 200) {
              expected = parse_size(r.header("content-length"));
            }
          }
        };
        sink.write = [&](const char* data, size_t size) {
          if (bad_range) return false;
          if (expected >= 0 && have + int64_t(size) > expected) {
            oversize = true;
            return false;
          }
          for (size_t done = 0; done < size;) {
            ssize_t n = ::pwrite(fd, data + done, size - done, have + done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
              write_errno = n < 0 ? errno : EIO;
              return false;
            }
            done += n;
          }
          if (check_sha) sha.update(data, size);
          have += size;
          bar.advance(size);
          return true;
        };
        request.sink = &sink;

        HttpResponse r;
        try {
          r = detail::http_request(request);
        } catch (const TransferError& e) {
          if (write_errno) fail_write(write_errno, incomplete, have, expected);
          if (oversize)
            fail_consistency(incomplete, "more bytes than the " + std::to_string(expected) +
                                             " announced (X-Linked-Size / Content-Length)");
          if (bad_range) {  // a 206 for another offset than asked: start over
            bad_range = false;
            restart();
          } else if (have > at_start) {
            retries_left = options.max_retries;  // progress was made: a fresh allowance
          }
          if (retries_left-- > 0) {
            std::this_thread::sleep_for(std::chrono::seconds(1));
            continue;
          }
          fail<NetworkError>("the download from " + m.location + " broke (" + e.what() +
                             ") after " + std::to_string(have) + " of " +
                             (expected >= 0 ? std::to_string(expected) : std::string("?")) +
                             " bytes; no blob was stored and the partial file " +
                             incomplete.string() + " is kept so that the next call resumes it");
        }
        if (write_errno) fail_write(write_errno, incomplete, have, expected);
        if (r.status == 416 && have > 0) {  // the partial file is not a prefix the server knows
          restart();
          if (retries_left-- > 0) continue;
        }
        if (r.status >= 400) fail_http(r);
        if (r.status != 200 && r.status != 206)
          throw HttpError("unexpected HTTP " + std::to_string(r.status) + " from " + r.url,
                          t.repo_id, t.filename, t.revision, r.status);
        break;
      }
    };
    fetch();
    std::string digest = check_sha ? sha.hex_digest() : "";
    if (check_sha && resumed_from > 0 && digest != m.etag) {
      // The partial file an earlier call left was corrupt (its bytes, not the transfer's): drop
      // it and fetch the whole file now, rather than failing this call and leaving the retry to
      // the next one.
      restart();
      fetch();
      digest = sha.hex_digest();
    }
    bar.finish();

    if (expected >= 0 && have != expected)
      fail_consistency(incomplete, "received " + std::to_string(have) + " bytes but " +
                                       std::to_string(expected) +
                                       " were announced (X-Linked-Size / Content-Length)");
    if (check_sha) {
      if (digest != m.etag)
        fail_consistency(incomplete, "the sha256 of the received bytes is " + digest +
                                         " but the Hub's etag says " + m.etag);
    }
    if (::fsync(fd) != 0 && is_disk_full(errno)) fail_write(errno, incomplete, have, expected);
    closer.fd = -1;
    if (::close(fd) != 0 && is_disk_full(errno)) fail_write(errno, incomplete, have, expected);
    fs::rename(incomplete, blob);  // atomic: the blob appears whole or not at all
  }

  [[noreturn]] void fail_consistency(const fs::path& incomplete, const std::string& what) const {
    std::error_code ec;
    fs::remove(incomplete, ec);
    fail<ConsistencyError>("download check failed: " + what +
                           "; nothing was stored, try again (or with force_download)");
  }

  [[noreturn]] void fail_write(int err, const fs::path& incomplete, int64_t have,
                               int64_t expected) const {
    std::error_code ec;
    fs::remove(incomplete, ec);  // a partial file would only hold on to the space that is missing
    std::string what = "cannot write " + incomplete.string() + " after " + std::to_string(have) +
                       " of " + (expected >= 0 ? std::to_string(expected) : std::string("?")) +
                       " bytes: " + std::strerror(err);
    if (is_disk_full(err))
      fail<DiskFullError>(what +
                          "; free some space or point HF_HUB_CACHE (or cache_dir) to a "
                          "larger disk");
    fail<HubError>(what);
  }

  void check_free_space(const fs::path& dir, int64_t needed, const fs::path& incomplete,
                        int64_t have) const {
    struct statvfs vfs {};
    if (needed <= 0 || ::statvfs(dir.c_str(), &vfs) != 0) return;
    int64_t available = int64_t(vfs.f_bavail) * int64_t(vfs.f_frsize);
    if (available < needed)
      fail<DiskFullError>(
          "not enough disk space in " + dir.string() + ": " + std::to_string(needed) +
          " more bytes are needed, " + std::to_string(available) + " are available (" +
          std::to_string(have) + " bytes already in " + incomplete.string() +
          "); free some space or point HF_HUB_CACHE (or cache_dir) to a larger disk");
  }
};

Resolved download(const std::string& repo_id, const std::string& filename,
                  const DownloadOptions& options) {
  check_repo_id(repo_id);
  check_relative("filename", filename);
  Target t;
  t.repo_id = repo_id;
  t.filename = filename;
  t.revision = options.revision.value_or("main");
  check_relative("revision", t.revision);
  t.cache_dir =
      options.cache_dir ? fs::path(expand_user(*options.cache_dir)) : fs::path(default_cache_dir());
  t.cache_dir = fs::weakly_canonical(fs::absolute(t.cache_dir));
  t.storage = t.cache_dir / repo_folder_name(repo_id);

  const bool offline = options.local_files_only || offline_from_env();
  if (offline && options.force_download)
    throw std::invalid_argument(
        "hub: force_download cannot be combined with local_files_only or HF_HUB_OFFLINE");

  // A commit hash that is cached needs no request at all.
  if (is_commit_hash(t.revision) && !options.force_download) {
    std::error_code ec;
    if (fs::exists(t.pointer(t.revision), ec)) return {t.pointer(t.revision), t.revision};
  }

  if (offline) {
    if (auto cached = find_in_cache(t)) return *cached;
    if (auto commit = known_missing(t))
      throw EntryNotFoundError("file not found in the repository at commit " + *commit +
                                   " (remembered in the cache; offline, so not asked again)",
                               repo_id, filename, t.revision);
    throw LocalEntryNotFoundError(
        std::string("not in the cache at ") + t.storage.string() +
            " and the Hub may not be asked (" +
            (options.local_files_only ? "local_files_only" : "HF_HUB_OFFLINE is set") +
            "); download it once while online",
        repo_id, filename, t.revision);
  }

  Session session{t, options, endpoint_of(options), token_to_send(options)};
  Metadata m;
  try {
    m = session.fetch_metadata();
  } catch (const RevisionNotFoundError&) {
    throw;
  } catch (const EntryNotFoundError&) {
    throw;
  } catch (const HubError&) {
    // Unreachable, unauthorised, not a Hub...: a cached copy of the revision still serves.
    if (!options.force_download) {
      if (auto cached = find_in_cache(t)) return *cached;
    }
    throw;
  }

  fs::path blob = t.storage / "blobs" / m.etag;
  fs::path pointer = t.pointer(m.commit);
  std::error_code ec;
  if (!options.force_download && fs::exists(pointer, ec)) {
    try {
      write_ref(t, m.commit);
    } catch (const std::exception&) {  // a read-only cache still serves its files
    }
    return {pointer, m.commit};
  }

  try {
    fs::create_directories(blob.parent_path());
    fs::create_directories(pointer.parent_path());
    write_cachedir_tag(t.cache_dir);
    write_ref(t, m.commit);
    FileLock lock(t.cache_dir / ".locks" / repo_folder_name(repo_id) / (m.etag + ".lock"));
    if (options.force_download || !fs::exists(blob)) {
      session.download_blob(m, blob);
    } else {  // someone else (huggingface_hub, say) stored it: a partial file of ours is moot
      fs::path partial = blob;
      partial += ".incomplete";
      fs::remove(partial, ec);
    }
    link_pointer(blob, pointer);
  } catch (const fs::filesystem_error& e) {
    std::string what = std::string("cannot write the cache: ") + e.what();
    if (is_disk_full(e.code().value()))
      throw DiskFullError(what + "; free some space or point HF_HUB_CACHE to a larger disk",
                          repo_id, filename, t.revision);
    throw HubError(what, repo_id, filename, t.revision);
  }
  return {pointer, m.commit};
}

}  // namespace

// ---- public API --------------------------------------------------------------------------------

std::string default_cache_dir() {
  if (auto dir = env_either("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")) return expand(*dir);
  return hf_home() + "/hub";
}

std::string repo_folder_name(const std::string& repo_id) {
  std::string name = "models";
  std::stringstream parts(repo_id);
  for (std::string part; std::getline(parts, part, '/');) name += "--" + part;
  return name;
}

std::string hf_hub_url(const std::string& repo_id, const std::string& filename,
                       const std::string& revision, const std::string& endpoint) {
  DownloadOptions options;
  if (!endpoint.empty()) options.endpoint = endpoint;
  return endpoint_of(options) + "/" + repo_id + "/resolve/" + detail::url_quote(revision, "") +
         "/" + detail::url_quote(filename, "/");
}

std::string hf_hub_download(const std::string& repo_id, const std::string& filename,
                            const DownloadOptions& options) {
  return download(repo_id, filename, options).pointer.string();
}

std::string snapshot_download(const std::string& repo_id, const std::vector<std::string>& filenames,
                              const DownloadOptions& options) {
  if (filenames.empty())
    throw std::invalid_argument("hub: snapshot_download of '" + repo_id +
                                "' needs at least one filename");
  Resolved first = download(repo_id, filenames[0], options);
  DownloadOptions pinned = options;  // every other file from the very same commit
  pinned.revision = first.commit;
  for (size_t i = 1; i < filenames.size(); ++i) download(repo_id, filenames[i], pinned);
  fs::path folder = first.pointer;
  const fs::path relative(filenames[0]);
  for (auto it = relative.begin(); it != relative.end(); ++it) folder = folder.parent_path();
  return folder.string();
}

std::optional<std::string> try_to_load_from_cache(const std::string& repo_id,
                                                  const std::string& filename,
                                                  const std::string& revision,
                                                  const std::string& cache_dir) {
  check_repo_id(repo_id);
  check_relative("filename", filename);
  check_relative("revision", revision);
  Target t;
  t.repo_id = repo_id;
  t.filename = filename;
  t.revision = revision;
  t.cache_dir =
      cache_dir.empty() ? fs::path(default_cache_dir()) : fs::path(expand_user(cache_dir));
  t.storage = t.cache_dir / repo_folder_name(repo_id);
  if (auto cached = find_in_cache(t)) return cached->pointer.string();
  return std::nullopt;
}

}  // namespace dual_attention::hub
