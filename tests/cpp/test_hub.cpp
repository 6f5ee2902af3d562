// The Hub client against a stand-in Hub on loopback (tests/hub/hub_server.py, started here): cache
// layout, request counts, revisions, tokens, errors, redirects, consistency checks, dropped
// connections, concurrent processes and a full disk. Expected hashes come from the stand-in
// (Python's hashlib), never from the code under test.
#if DUAL_ATTENTION_WITH_HUB

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dual_attention/hub/hub.h"
#include "dual_attention/io/safetensors.h"
#include "dual_attention/language_models.h"
#include "dual_attention/pretrained.h"
#include "test_paths.h"
#include "test_support.h"

extern char** environ;

using namespace test_support;

namespace {

namespace fs = std::filesystem;
namespace hub = dual_attention::hub;
using nlohmann::json;

const std::string kCommit1 = "0123456789abcdef0123456789abcdef01234567";
const std::string kCommit2 = "fedcba9876543210fedcba9876543210fedcba98";
const std::string kPrCommit = "1111111111111111111111111111111111111111";
const std::string kGoodToken = "hf_good_token";
constexpr int64_t kBigSize = 3 * 1000 * 1000;

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A plain HTTP/1.0 GET to 127.0.0.1 (the stand-in's control endpoints); returns the body.
std::string local_get(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    throw std::runtime_error("cannot connect to the stand-in");
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) != ssize_t(request.size())) {
    close(fd);
    throw std::runtime_error("cannot write to the stand-in");
  }
  std::string response;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) response.append(buf, n);
  close(fd);
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// A port nothing listens on: bound, then closed.
int closed_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// The stand-in Hub: a Python process serving the repos described in a JSON file.
class StandInHub {
 public:
  void start(const fs::path& repos_json) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    std::string python = DUAL_ATTENTION_PYTHON, script = DUAL_ATTENTION_HUB_SERVER,
                repos = repos_json.string();
    std::vector<char*> argv = {python.data(), script.data(), const_cast<char*>("--repos"),
                               repos.data(), nullptr};
    int rc = posix_spawn(&pid_, python.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(in[0]);
    close(out[1]);
    stdin_ = in[1];  // the server exits when this closes, even if we crash
    if (rc != 0) throw std::runtime_error("cannot start " + python);
    std::string line;
    char c;
    pollfd p{out[0], POLLIN, 0};
    while (poll(&p, 1, 20000) > 0 && read(out[0], &c, 1) == 1 && c != '\n') line += c;
    close(out[0]);
    auto ports = json::parse(line);
    port = ports.at("port").get<int>();
    cdn_port = ports.at("cdn_port").get<int>();
  }
  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      close(stdin_);
      pid_ = -1;
    }
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port); }
  json control(const std::string& query) const {
    return json::parse(local_get(port, "/_control?" + query));
  }
  json counters() const { return json::parse(local_get(port, "/_counters")); }
  json files() const { return json::parse(local_get(port, "/_files")); }

  int port = 0, cdn_port = 0;

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
};

// Requests in the log that match a method and a path fragment.
int count_requests(const json& counters, const std::string& method,
                   const std::string& fragment = "") {
  int n = 0;
  for (const auto& entry : counters.at("log"))
    if (entry.at("method") == method &&
        entry.at("path").get<std::string>().find(fragment) != std::string::npos)
      ++n;
  return n;
}

class Hub : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_dir_ = new fs::path(make_temp_dir("hub_repos"));
    const fs::path fixture = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "hub" / "tiny-dat-lm";
    const fs::path lm_fixture = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "lm" / "dat_rca";
    write_bytes(*repo_dir_ / "big.bin", random_bytes(kBigSize, 1));
    write_bytes(*repo_dir_ / "short.bin", random_bytes(200000, 2));
    write_bytes(*repo_dir_ / "corrupt.bin", random_bytes(200000, 3));
    write_bytes(*repo_dir_ / "huge.bin", random_bytes(1000, 4));
    write_bytes(*repo_dir_ / "secret.bin", random_bytes(50000, 5));
    auto file = [](const fs::path& p, bool lfs) {
      return json{{"path", p.string()}, {"lfs", lfs}};
    };
    json tiny_files = {{"config.json", file(fixture / "config.json", false)},
                       {"model.safetensors", file(fixture / "model.safetensors", true)},
                       {"README.md", file(fixture / "README.md", false)}};
    json dev_files = tiny_files;
    dev_files["config.json"] = {{"text", "{\"vocab_size\": 128}"}};
    json repos = {
        {"org/tiny-dat",
         {{"commits",
           {{kCommit1, {{"files", tiny_files}}},
            {kCommit2, {{"files", dev_files}}},
            {kPrCommit, {{"files", {{"config.json", {{"text", "{\"pr\": 1}"}}}}}}}}},
          {"branches", {{"main", kCommit1}, {"dev", kCommit2}, {"refs/pr/1", kPrCommit}}},
          {"tags", {{"v1.0", kCommit1}}}}},
        {"org/renamed-dat", {{"renamed_to", "org/tiny-dat"}}},
        {"org/resolve-cache",
         {{"resolve_cache", true},
          {"commits",
           {{kCommit1, {{"files", {{"config.json", file(fixture / "config.json", false)}}}}}}},
          {"branches", {{"main", kCommit1}}}}},
        {"org/big",
         {{"commits", {{kCommit1, {{"files", {{"model.safetensors", file("big.bin", true)}}}}}}},
          {"branches", {{"main", kCommit1}}}}},
        // A DAT checkpoint written by the reference, with the reference's logits beside it.
        {"org/dat-rca",
         {{"commits",
           {{kCommit1,
             {{"files",
               {{"config.json", file(lm_fixture / "config.json", false)},
                {"model.safetensors", file(lm_fixture / "model.safetensors", true)}}}}}}},
          {"branches", {{"main", kCommit1}}}}},
        // The same checkpoint with its weights as pytorch_model.bin only (torch.save).
        {"org/dat-rca-bin",
         {{"commits",
           {{kCommit1,
             {{"files",
               {{"config.json", file(lm_fixture / "config.json", false)},
                {"pytorch_model.bin", file(fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "torch_save" /
                                               "dat_rca" / "pytorch_model.bin",
                                           true)}}}}}}},
          {"branches", {{"main", kCommit1}}}}},
        {"org/faulty",
         {{"commits",
           {{kCommit1,
             {{"files",
               {{"short.bin", {{"path", "short.bin"}, {"lfs", true}, {"linked_size", 200100}}},
                {"corrupt.bin", {{"path", "corrupt.bin"}, {"lfs", true}, {"corrupt", true}}},
                {"huge.bin",
                 {{"path", "huge.bin"}, {"lfs", true}, {"linked_size", int64_t(1) << 50}}}}}}}}},
          {"branches", {{"main", kCommit1}}}}},
        {"org/private",
         {{"private", true},
          {"tokens", {kGoodToken}},
          {"commits", {{kCommit1, {{"files", {{"secret.bin", file("secret.bin", true)}}}}}}},
          {"branches", {{"main", kCommit1}}}}},
        {"org/gated",
         {{"gated", true},
          {"tokens", {"hf_granted"}},
          {"commits", {{kCommit1, {{"files", {{"config.json", {{"text", "{}"}}}}}}}}},
          {"branches", {{"main", kCommit1}}}}}};
    write_bytes(*repo_dir_ / "repos.json", json{{"repos", repos}}.dump(2));
    server_ = new StandInHub();
    server_->start(*repo_dir_ / "repos.json");
  }

  static void TearDownTestSuite() {
    server_->stop();
    delete server_;
    fs::remove_all(*repo_dir_);
    delete repo_dir_;
  }

  void SetUp() override {
    home_ = make_temp_dir("hub_home");
    cache_ = home_ / "hub";
    for (const char* name : {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN",
                             "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE",
                             "HUGGINGFACE_HUB_CACHE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"})
      env_.unset(name);
    env_.set("HF_HOME", home_.string());  // no real token file or cache can leak in
    env_.set("HF_ENDPOINT", server_->endpoint());
    server_->control("reset=1");
    options_.cache_dir = cache_.string();
    options_.progress = false;
  }

  void TearDown() override { fs::remove_all(home_); }

  fs::path storage(const std::string& repo = "org/tiny-dat") const {
    return cache_ / hub::repo_folder_name(repo);
  }
  std::string expected(const std::string& repo, const std::string& commit, const std::string& file,
                       const std::string& key) const {
    return server_->files().at(repo).at(commit).at(file).at(key).get<std::string>();
  }
  // Everything in the cache that is not a lock, for "nothing was left behind" checks.
  std::vector<std::string> cache_entries() const {
    std::vector<std::string> found;
    if (!fs::exists(cache_)) return found;
    for (const auto& e : fs::recursive_directory_iterator(cache_))
      if (e.path().string().find("/.locks/") == std::string::npos)
        found.push_back(fs::relative(e.path(), cache_).string());
    return found;
  }

  static StandInHub* server_;
  static fs::path* repo_dir_;
  fs::path home_, cache_;
  EnvGuard env_;
  hub::DownloadOptions options_;
};

StandInHub* Hub::server_ = nullptr;
fs::path* Hub::repo_dir_ = nullptr;

// ---- layout and request counts -----------------------------------------------------------------

TEST_F(Hub, FreshDownloadLaysOutTheCacheLikeHuggingfaceHub) {
  const fs::path fixture = fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "hub" / "tiny-dat-lm";
  std::string folder =
      hub::snapshot_download("org/tiny-dat", {"config.json", "model.safetensors"}, options_);
  EXPECT_EQ(fs::path(folder), storage() / "snapshots" / kCommit1);

  const std::string config_oid = expected("org/tiny-dat", kCommit1, "config.json", "git_oid");
  const std::string model_sha = expected("org/tiny-dat", kCommit1, "model.safetensors", "sha256");
  fs::path config = fs::path(folder) / "config.json",
           model = fs::path(folder) / "model.safetensors";
  ASSERT_TRUE(fs::is_symlink(config));
  ASSERT_TRUE(fs::is_symlink(model));
  EXPECT_EQ(fs::read_symlink(config), fs::path("../../blobs") / config_oid);
  EXPECT_EQ(fs::read_symlink(model), fs::path("../../blobs") / model_sha);
  EXPECT_EQ(read_bytes(config), read_bytes(fixture / "config.json"));
  EXPECT_EQ(read_bytes(model), read_bytes(fixture / "model.safetensors"));  // byte-identical
  EXPECT_EQ(read_bytes(storage() / "refs" / "main"), kCommit1);
  EXPECT_TRUE(fs::exists(cache_ / "CACHEDIR.TAG"));
  EXPECT_TRUE(fs::exists(cache_ / ".locks" / "models--org--tiny-dat" / (model_sha + ".lock")));
  EXPECT_FALSE(fs::exists(storage() / "blobs" / (model_sha + ".incomplete")));

  json c = server_->counters();
  EXPECT_EQ(c["HEAD"], 2);
  EXPECT_EQ(c["GET"], 2);
  for (const auto& entry : c["log"]) {  // the LFS file came from the CDN, the rest from the Hub
    if (entry["path"].get<std::string>().find("/cdn/") == 0) {
      EXPECT_EQ(entry["server"], "cdn");
      EXPECT_EQ(entry["status"], 200);
    }
  }
  EXPECT_EQ(count_requests(c, "GET", "/cdn/" + model_sha), 1);
}

TEST_F(Hub, SecondCallMakesOneHeadAndNoGet) {
  std::string first = hub::hf_hub_download("org/tiny-dat", "model.safetensors", options_);
  server_->control("reset=1");
  std::string second = hub::hf_hub_download("org/tiny-dat", "model.safetensors", options_);
  EXPECT_EQ(first, second);
  json c = server_->counters();
  EXPECT_EQ(c["HEAD"], 1);
  EXPECT_EQ(c["GET"], 0);
}

TEST_F(Hub, CachedCommitHashMakesNoRequestAtAll) {
  options_.revision = kCommit1;
  std::string first = hub::hf_hub_download("org/tiny-dat", "config.json", options_);
  server_->control("reset=1");
  EXPECT_EQ(hub::hf_hub_download("org/tiny-dat", "config.json", options_), first);
  json c = server_->counters();
  EXPECT_EQ(c["HEAD"], 0);
  EXPECT_EQ(c["GET"], 0);
  EXPECT_FALSE(fs::exists(storage() / "refs" / kCommit1));  // a commit needs no ref
}

TEST_F(Hub, OfflineUsesTheCacheWithoutAnyRequest) {
  std::string online =
      hub::snapshot_download("org/tiny-dat", {"config.json", "model.safetensors"}, options_);
  server_->control("reset=1");
  env_.set("HF_HUB_OFFLINE", "1");
  EXPECT_EQ(hub::snapshot_download("org/tiny-dat", {"config.json", "model.safetensors"}, options_),
            online);
  env_.unset("HF_HUB_OFFLINE");
  options_.local_files_only = true;
  EXPECT_EQ(hub::hf_hub_download("org/tiny-dat", "config.json", options_), online + "/config.json");
  EXPECT_EQ(hub::try_to_load_from_cache("org/tiny-dat", "config.json", "main", cache_.string()),
            online + "/config.json");
  json c = server_->counters();
  EXPECT_EQ(c["HEAD"], 0);
  EXPECT_EQ(c["GET"], 0);
}

TEST_F(Hub, OfflineWithNothingCachedSaysSoAndNamesTheFile) {
  env_.set("HF_HUB_OFFLINE", "1");
  options_.revision = "v1.0";
  try {
    hub::hf_hub_download("org/tiny-dat", "config.json", options_);
    FAIL() << "expected LocalEntryNotFoundError";
  } catch (const hub::LocalEntryNotFoundError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("'config.json' of 'org/tiny-dat' at revision 'v1.0'"), std::string::npos)
        << what;
    EXPECT_NE(what.find("HF_HUB_OFFLINE"), std::string::npos) << what;
    EXPECT_EQ(e.repo_id(), "org/tiny-dat");
    EXPECT_EQ(e.filename(), "config.json");
    EXPECT_EQ(e.revision(), "v1.0");
  }
  EXPECT_EQ(server_->counters()["HEAD"], 0);
  EXPECT_FALSE(hub::try_to_load_from_cache("org/tiny-dat", "config.json", "main", cache_.string()));
}

TEST_F(Hub, ForceDownloadFetchesAgain) {
  hub::hf_hub_download("org/big", "model.safetensors", options_);
  server_->control("reset=1");
  options_.force_download = true;
  std::string path = hub::hf_hub_download("org/big", "model.safetensors", options_);
  EXPECT_EQ(server_->counters()["GET"], 1);
  EXPECT_EQ(read_bytes(path), read_bytes(*repo_dir_ / "big.bin"));
  options_.local_files_only = true;
  EXPECT_THROW(hub::hf_hub_download("org/big", "model.safetensors", options_),
               std::invalid_argument);
}

// ---- revisions ---------------------------------------------------------------------------------

TEST_F(Hub, RevisionByBranchTagAndCommit) {
  options_.revision = "dev";
  std::string dev = hub::hf_hub_download("org/tiny-dat", "config.json", options_);
  EXPECT_EQ(read_bytes(dev), "{\"vocab_size\": 128}");
  EXPECT_EQ(fs::path(dev).parent_path().filename(), kCommit2);
  EXPECT_EQ(read_bytes(storage() / "refs" / "dev"), kCommit2);

  options_.revision = "v1.0";
  std::string tag = hub::hf_hub_download("org/tiny-dat", "config.json", options_);
  EXPECT_EQ(fs::path(tag).parent_path().filename(), kCommit1);
  EXPECT_EQ(read_bytes(storage() / "refs" / "v1.0"), kCommit1);

  options_.revision = kCommit2;
  EXPECT_EQ(hub::hf_hub_download("org/tiny-dat", "config.json", options_), dev);
  EXPECT_FALSE(fs::exists(storage() / "refs" / kCommit2));

  // The two commits share the unchanged weights: one blob, two links.
  options_.revision = "dev";
  std::string w2 = hub::hf_hub_download("org/tiny-dat", "model.safetensors", options_);
  options_.revision = "main";
  std::string w1 = hub::hf_hub_download("org/tiny-dat", "model.safetensors", options_);
  EXPECT_NE(w1, w2);
  EXPECT_EQ(fs::read_symlink(w1), fs::read_symlink(w2));
}

TEST_F(Hub, RevisionWithSlashesIsEncodedAndStoredAsANestedRef) {
  EXPECT_EQ(hub::hf_hub_url("org/name", "sub dir/a b+c.json", "refs/pr/1", "http://h:1"),
            // huggingface_hub.hf_hub_url(..., revision="refs/pr/1", endpoint="http://h:1")
            "http://h:1/org/name/resolve/refs%2Fpr%2F1/sub%20dir/a%20b%2Bc.json");
  options_.revision = "refs/pr/1";
  std::string path = hub::hf_hub_download("org/tiny-dat", "config.json", options_);
  EXPECT_EQ(read_bytes(path), "{\"pr\": 1}");
  EXPECT_EQ(read_bytes(storage() / "refs" / "refs" / "pr" / "1"), kPrCommit);
  EXPECT_EQ(count_requests(server_->counters(), "HEAD", "/resolve/refs%2Fpr%2F1/"), 1);
}

// ---- tokens ------------------------------------------------------------------------------------

TEST_F(Hub, TokenArgumentOpensAPrivateRepoAndNeverReachesTheCdn) {
  options_.token = kGoodToken;
  std::string path = hub::hf_hub_download("org/private", "secret.bin", options_);
  EXPECT_EQ(read_bytes(path), read_bytes(*repo_dir_ / "secret.bin"));
  json c = server_->counters();
  for (const auto& entry : c["log"]) {
    if (entry["server"] == "hub") {
      EXPECT_EQ(entry["authorization"], "Bearer " + kGoodToken);
    } else {
      EXPECT_TRUE(entry["authorization"].is_null()) << entry.dump();
    }
  }
  EXPECT_EQ(count_requests(c, "GET", "/cdn/"), 1);
}

TEST_F(Hub, TokenFromHfTokenAndFromTheTokenFile) {
  env_.set("HF_TOKEN", kGoodToken);
  EXPECT_NO_THROW(hub::hf_hub_download("org/private", "secret.bin", options_));
  env_.unset("HF_TOKEN");
  fs::remove_all(cache_);
  write_bytes(home_ / "token", kGoodToken + "\n");  // as `hf auth login` writes it
  EXPECT_NO_THROW(hub::hf_hub_download("org/private", "secret.bin", options_));
  fs::remove_all(cache_);
  env_.set("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1");
  EXPECT_THROW(hub::hf_hub_download("org/private", "secret.bin", options_), hub::UnauthorizedError);
}

TEST_F(Hub, MissingOrWrongTokenIsUnauthorizedAndAsksForAValidToken) {
  for (std::optional<std::string> token :
       {std::optional<std::string>(), std::optional<std::string>("hf_wrong")}) {
    options_.token = token;
    try {
      hub::hf_hub_download("org/private", "secret.bin", options_);
      FAIL() << "expected UnauthorizedError";
    } catch (const hub::UnauthorizedError& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("valid token"), std::string::npos) << what;
      EXPECT_NE(what.find("HTTP 401"), std::string::npos) << what;
      EXPECT_NE(what.find("'secret.bin' of 'org/private' at revision 'main'"), std::string::npos)
          << what;
    }
  }
  EXPECT_TRUE(cache_entries().empty());
}

TEST_F(Hub, GatedRepoWithoutAccessIsAGatedRepoError) {
  EXPECT_THROW(hub::hf_hub_download("org/gated", "config.json", options_), hub::GatedRepoError);
  options_.token = "hf_not_granted";
  try {
    hub::hf_hub_download("org/gated", "config.json", options_);
    FAIL() << "expected GatedRepoError";
  } catch (const hub::UnauthorizedError& e) {  // a GatedRepoError is an UnauthorizedError
    EXPECT_NE(std::string(e.what()).find("HTTP 403"), std::string::npos) << e.what();
    EXPECT_NE(dynamic_cast<const hub::GatedRepoError*>(&e), nullptr);
  }
  options_.token = "hf_granted";
  EXPECT_EQ(read_bytes(hub::hf_hub_download("org/gated", "config.json", options_)), "{}");
}

// ---- errors ------------------------------------------------------------------------------------

TEST_F(Hub, EachNotFoundKindHasItsOwnError) {
  EXPECT_THROW(hub::hf_hub_download("org/nope", "config.json", options_),
               hub::RepositoryNotFoundError);
  options_.revision = "no-such-branch";
  EXPECT_THROW(hub::hf_hub_download("org/tiny-dat", "config.json", options_),
               hub::RevisionNotFoundError);
  options_.revision.reset();
  try {
    hub::hf_hub_download("org/tiny-dat", "nope.json", options_);
    FAIL() << "expected EntryNotFoundError";
  } catch (const hub::EntryNotFoundError& e) {
    EXPECT_NE(std::string(e.what()).find("'nope.json' of 'org/tiny-dat' at revision 'main'"),
              std::string::npos);
  }
  // As huggingface_hub does, the absence is remembered and offline lookups report it.
  EXPECT_TRUE(fs::exists(storage() / ".no_exist" / kCommit1 / "nope.json"));
  options_.local_files_only = true;
  EXPECT_THROW(hub::hf_hub_download("org/tiny-dat", "nope.json", options_),
               hub::EntryNotFoundError);
}

TEST_F(Hub, InvalidArgumentsAreRejectedBeforeAnyRequest) {
  EXPECT_THROW(hub::hf_hub_download("a/b/c", "config.json", options_), std::invalid_argument);
  EXPECT_THROW(hub::hf_hub_download("org--x/y", "config.json", options_), std::invalid_argument);
  EXPECT_THROW(hub::hf_hub_download("org/tiny-dat", "../escape", options_), std::invalid_argument);
  EXPECT_THROW(hub::hf_hub_download("org/tiny-dat", "/etc/passwd", options_),
               std::invalid_argument);
  options_.revision = "../../x";
  EXPECT_THROW(hub::hf_hub_download("org/tiny-dat", "config.json", options_),
               std::invalid_argument);
  EXPECT_THROW(hub::snapshot_download("org/tiny-dat", {}, options_), std::invalid_argument);
  EXPECT_EQ(server_->counters()["HEAD"], 0);
}

TEST_F(Hub, UnreachableHubIsANetworkErrorUnlessTheFileIsCached) {
  std::string cached = hub::hf_hub_download("org/tiny-dat", "config.json", options_);
  options_.endpoint = "http://127.0.0.1:" + std::to_string(closed_port());
  EXPECT_EQ(hub::hf_hub_download("org/tiny-dat", "config.json", options_), cached);
  try {
    hub::hf_hub_download("org/tiny-dat", "README.md", options_);
    FAIL() << "expected NetworkError";
  } catch (const hub::NetworkError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("'README.md' of 'org/tiny-dat' at revision 'main'"), std::string::npos);
    EXPECT_NE(what.find("cannot reach"), std::string::npos) << what;
  }
}

// ---- redirects ---------------------------------------------------------------------------------

TEST_F(Hub, RelativeRedirectsOnTheHubAreFollowed) {
  // A renamed repo answers 307 with a relative Location; the file is cached under the name asked.
  std::string path = hub::hf_hub_download("org/renamed-dat", "config.json", options_);
  EXPECT_EQ(fs::path(path), storage("org/renamed-dat") / "snapshots" / kCommit1 / "config.json");
  // The Hub's /api/resolve-cache redirect for regular files.
  std::string cached = hub::hf_hub_download("org/resolve-cache", "config.json", options_);
  EXPECT_EQ(read_bytes(cached), read_bytes(path));
  json c = server_->counters();
  EXPECT_EQ(count_requests(c, "HEAD", "/api/resolve-cache/models/org/resolve-cache/"), 1);
  EXPECT_EQ(count_requests(c, "GET", "/api/resolve-cache/models/org/resolve-cache/"), 1);
}

// ---- consistency -------------------------------------------------------------------------------

TEST_F(Hub, SizeMismatchIsDetectedAndNothingIsStored) {
  try {
    hub::hf_hub_download("org/faulty", "short.bin", options_);
    FAIL() << "expected ConsistencyError";
  } catch (const hub::ConsistencyError& e) {
    EXPECT_NE(std::string(e.what()).find("200100"), std::string::npos) << e.what();
  }
  for (const auto& entry : cache_entries()) {
    EXPECT_EQ(entry.find("blobs/"), std::string::npos) << entry;
    EXPECT_EQ(entry.find("short.bin"), std::string::npos) << entry;
  }
}

TEST_F(Hub, Sha256MismatchIsDetectedAndNothingIsStored) {
  try {
    hub::hf_hub_download("org/faulty", "corrupt.bin", options_);
    FAIL() << "expected ConsistencyError";
  } catch (const hub::ConsistencyError& e) {
    EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos) << e.what();
  }
  for (const auto& entry : cache_entries()) {
    EXPECT_EQ(entry.find("blobs/"), std::string::npos) << entry;
    EXPECT_EQ(entry.find("corrupt.bin"), std::string::npos) << entry;
  }
}

// ---- dropped connections -----------------------------------------------------------------------

TEST_F(Hub, DroppedConnectionLeavesNoBlobNorLinkAndTheNextCallResumesWithRange) {
  const std::string sha = expected("org/big", kCommit1, "model.safetensors", "sha256");
  const fs::path blob = storage("org/big") / "blobs" / sha;
  const fs::path link = storage("org/big") / "snapshots" / kCommit1 / "model.safetensors";
  server_->control("drops=1&drop_after=1000000");
  options_.max_retries = 0;
  EXPECT_THROW(hub::hf_hub_download("org/big", "model.safetensors", options_), hub::NetworkError);
  EXPECT_FALSE(fs::exists(blob));
  EXPECT_FALSE(fs::exists(fs::symlink_status(link)));  // no link, not even a dangling one
  fs::path partial = blob;
  partial += ".incomplete";
  ASSERT_TRUE(fs::exists(partial));
  EXPECT_EQ(fs::file_size(partial), 1000000u);

  server_->control("reset=1");
  std::string path = hub::hf_hub_download("org/big", "model.safetensors", options_);
  EXPECT_EQ(read_bytes(path), read_bytes(*repo_dir_ / "big.bin"));
  EXPECT_FALSE(fs::exists(partial));
  json c = server_->counters();
  ASSERT_EQ(count_requests(c, "GET", "/cdn/"), 1);
  for (const auto& entry : c["log"]) {
    if (entry["method"] != "GET") continue;
    EXPECT_EQ(entry["range"], "bytes=1000000-");
    EXPECT_EQ(entry["status"], 206);
  }
}

TEST_F(Hub, DroppedConnectionIsResumedWithinTheSameCall) {
  server_->control("drops=2&drop_after=700000");
  std::string path = hub::hf_hub_download("org/big", "model.safetensors", options_);
  EXPECT_EQ(read_bytes(path), read_bytes(*repo_dir_ / "big.bin"));
  std::vector<json> gets;
  const json c = server_->counters();
  for (const auto& entry : c["log"])
    if (entry["method"] == "GET") gets.push_back(entry);
  ASSERT_EQ(gets.size(), 3u);
  EXPECT_TRUE(gets[0]["range"].is_null());
  EXPECT_EQ(gets[1]["range"], "bytes=700000-");
  EXPECT_EQ(gets[2]["range"], "bytes=1400000-");
}

// Issue 16: a corrupt partial file in the cache is verified, discarded and fetched again within
// the same call, whether it is full-length (no transfer needed to find out) or a prefix.
TEST_F(Hub, CorruptPartialFileIsDiscardedAndRefetchedWithinTheSameCall) {
  const std::string sha = expected("org/big", kCommit1, "model.safetensors", "sha256");
  fs::path partial = storage("org/big") / "blobs" / sha;
  partial += ".incomplete";
  for (const size_t size : {size_t(kBigSize), size_t(1000000)}) {
    fs::remove_all(cache_);
    server_->control("reset=1");
    write_bytes(partial, random_bytes(size, 99));  // the right length (or less), wrong bytes
    const std::string path = hub::hf_hub_download("org/big", "model.safetensors", options_);
    EXPECT_EQ(read_bytes(path), read_bytes(*repo_dir_ / "big.bin")) << size;
    EXPECT_FALSE(fs::exists(partial)) << size;
    std::vector<json> gets;
    const json c = server_->counters();
    for (const auto& entry : c["log"])
      if (entry["method"] == "GET") gets.push_back(entry);
    ASSERT_FALSE(gets.empty()) << size;
    // The last transfer is the whole file, from byte 0.
    EXPECT_TRUE(gets.back()["range"].is_null()) << size;
    EXPECT_EQ(gets.back()["status"], 200) << size;
    EXPECT_EQ(gets.size(), size == size_t(kBigSize) ? 1u : 2u) << size;
  }
}

TEST_F(Hub, ServerIgnoringRangeMakesTheDownloadStartOver) {
  server_->control("drops=1&drop_after=500000");
  options_.max_retries = 0;
  EXPECT_THROW(hub::hf_hub_download("org/big", "model.safetensors", options_), hub::NetworkError);
  server_->control("reset=1&ignore_range=1");
  std::string path = hub::hf_hub_download("org/big", "model.safetensors", options_);
  EXPECT_EQ(read_bytes(path), read_bytes(*repo_dir_ / "big.bin"));
  json c = server_->counters();
  ASSERT_EQ(count_requests(c, "GET"), 1);
  EXPECT_EQ(c["log"].back()["status"], 200);
}

// ---- processes at once -------------------------------------------------------------------------

TEST_F(Hub, TwoProcessesDownloadingAtOnceEndWithOneGoodBlob) {
  // A download first, so that this process's state (its random temporary names among it) is in use
  // before the fork, as it is when the whole suite runs.
  hub::hf_hub_download("org/tiny-dat", "config.json", options_);
  server_->control("throttle=2000000");  // ~1.5 s for the 3 MB file: the two overlap
  // Both children start at once (when `go` closes) and report what they caught through a pipe.
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  struct Child {
    pid_t pid;
    int report;
  };
  std::vector<Child> children;
  for (int i = 0; i < 2; ++i) {
    int report[2];
    ASSERT_EQ(pipe(report), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(go[1]);
      close(report[0]);
      char c;
      while (read(go[0], &c, 1) < 0 && errno == EINTR) {
      }
      std::string message;
      try {
        hub::hf_hub_download("org/big", "model.safetensors", options_);
      } catch (const std::exception& e) {
        message = e.what();
      } catch (...) {
        message = "an exception that is not a std::exception";
      }
      const bool written = write(report[1], message.data(), message.size()) >= 0;
      _exit(message.empty() && written ? 0 : 1);
    }
    close(report[1]);
    children.push_back({pid, report[0]});
  }
  close(go[0]);
  close(go[1]);
  for (const Child& child : children) {
    std::string message;
    char buf[4096];
    for (ssize_t n; (n = read(child.report, buf, sizeof(buf))) > 0;) message.append(buf, n);
    close(child.report);
    int status = 0;
    waitpid(child.pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << child.pid << " failed: " << message;
  }
  json c = server_->counters();
  EXPECT_EQ(count_requests(c, "HEAD", "/org/big/"), 2);
  EXPECT_EQ(count_requests(c, "GET", "/cdn/"), 1);  // the second process waited for the lock
  const std::string sha = expected("org/big", kCommit1, "model.safetensors", "sha256");
  EXPECT_EQ(read_bytes(storage("org/big") / "blobs" / sha), read_bytes(*repo_dir_ / "big.bin"));
  for (const auto& entry : cache_entries())
    EXPECT_EQ(entry.find(".incomplete"), std::string::npos) << entry;
}

// ---- a full disk -------------------------------------------------------------------------------

TEST_F(Hub, NotEnoughFreeSpaceFailsBeforeDownloading) {
  // The stand-in announces 1 PiB (X-Linked-Size): more than this disk has, as statvfs reports.
  try {
    hub::hf_hub_download("org/faulty", "huge.bin", options_);
    FAIL() << "expected DiskFullError";
  } catch (const hub::DiskFullError& e) {
    EXPECT_NE(std::string(e.what()).find("not enough disk space"), std::string::npos) << e.what();
  }
  EXPECT_EQ(count_requests(server_->counters(), "GET"), 0);
}

TEST_F(Hub, WriteFailureOnAFullDiskIsADiskFullErrorAndLeavesNothing) {
  // A child process whose file size limit (RLIMIT_FSIZE, 1 MB) is below the 3 MB file: the kernel
  // fails the write with EFBIG part-way, as a full disk fails it with ENOSPC.
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(report[0]);
    signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of being killed
    rlimit limit{1000000, 1000000};
    setrlimit(RLIMIT_FSIZE, &limit);
    std::string message = "no error";
    int code = 1;
    try {
      hub::hf_hub_download("org/big", "model.safetensors", options_);
    } catch (const hub::DiskFullError& e) {
      message = e.what();
      code = 0;
    } catch (const std::exception& e) {
      message = e.what();
    }
    if (write(report[1], message.data(), message.size()) < 0) code = 2;
    _exit(code);
  }
  close(report[1]);
  std::string message;
  char buf[4096];
  for (ssize_t n; (n = read(report[0], buf, sizeof(buf))) > 0;) message.append(buf, n);
  close(report[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << message;
  EXPECT_NE(message.find("'model.safetensors' of 'org/big' at revision 'main'"), std::string::npos)
      << message;
  EXPECT_NE(message.find("File too large"), std::string::npos) << message;
  for (const auto& entry : cache_entries()) {
    EXPECT_EQ(entry.find("blobs/"), std::string::npos) << entry;  // no blob, no partial file
    EXPECT_EQ(entry.find("model.safetensors"), std::string::npos) << entry;
  }
}

// ---- where the cache is ------------------------------------------------------------------------

TEST_F(Hub, CacheFolderFollowsHfHubCacheThenHfHome) {
  EXPECT_EQ(hub::default_cache_dir(), (home_ / "hub").string());
  env_.set("HF_HUB_CACHE", (home_ / "elsewhere").string());
  EXPECT_EQ(hub::default_cache_dir(), (home_ / "elsewhere").string());
  options_.cache_dir.reset();
  std::string path = hub::hf_hub_download("org/tiny-dat", "config.json", options_);
  EXPECT_EQ(fs::path(path),
            home_ / "elsewhere" / "models--org--tiny-dat" / "snapshots" / kCommit1 / "config.json");
  env_.unset("HF_HUB_CACHE");
  env_.unset("HF_HOME");
  env_.set("XDG_CACHE_HOME", (home_ / "xdg").string());
  EXPECT_EQ(hub::default_cache_dir(), (home_ / "xdg" / "huggingface" / "hub").string());
}

// ---- from_pretrained with a repo id ------------------------------------------------------------

TEST_F(Hub, FromPretrainedLoadsADatCheckpointByRepoIdAndReproducesTheReference) {
  namespace da = dual_attention;
  const fs::path expected_file =
      fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "lm" / "dat_rca" / "expected.safetensors";
  auto expected = da::io::load_safetensors(expected_file.string()).tensors;
  auto check = [&](da::DualAttnTransformerLM& model) {
    auto [logits, loss] = model->forward(expected.at("idx"), expected.at("targets"));
    const double scale = expected.at("logits").abs().max().item<double>();
    EXPECT_LE((logits - expected.at("logits")).abs().max().item<double>(), 1e-4 * scale);
    EXPECT_NEAR(loss.item<double>(), expected.at("loss").item<double>(), 1e-5);
  };

  auto model = da::DualAttnTransformerLM::from_pretrained(
      "org/dat-rca", da::PretrainedOptions().download(options_));
  check(model);
  EXPECT_TRUE(
      fs::is_symlink(storage("org/dat-rca") / "snapshots" / kCommit1 / "model.safetensors"));

  // Offline, the same call is served from the cache without a request.
  server_->control("reset=1");
  env_.set("HF_HUB_OFFLINE", "1");
  auto cached = da::DualAttnTransformerLM::from_pretrained(
      "org/dat-rca", da::PretrainedOptions().download(options_));
  check(cached);
  const auto counters = server_->counters();
  EXPECT_EQ(counters.value("HEAD", -1), 0);
  EXPECT_EQ(counters.value("GET", -1), 0);

  env_.unset("HF_HUB_OFFLINE");
  EXPECT_THROW(da::DualAttnTransformerLM::from_pretrained(
                   "org/no-such-model", da::PretrainedOptions().download(options_)),
               hub::RepositoryNotFoundError);
}

// Issue 16: a repository without model.safetensors is loaded from pytorch_model.bin, as
// huggingface_hub's mixin falls back, online and then offline from the cache.
TEST_F(Hub, FromPretrainedFallsBackToPytorchModelBin) {
  namespace da = dual_attention;
  const auto expected = da::io::load_safetensors((fs::path(DUAL_ATTENTION_FIXTURE_DIR) / "lm" /
                                                  "dat_rca" / "expected.safetensors")
                                                     .string())
                            .tensors;
  auto check = [&](da::DualAttnTransformerLM& model) {
    auto [logits, loss] = model->forward(expected.at("idx"), expected.at("targets"));
    const double scale = expected.at("logits").abs().max().item<double>();
    EXPECT_LE((logits - expected.at("logits")).abs().max().item<double>(), 1e-4 * scale);
  };
  auto model = da::DualAttnTransformerLM::from_pretrained(
      "org/dat-rca-bin", da::PretrainedOptions().download(options_));
  check(model);
  const fs::path snapshot = storage("org/dat-rca-bin") / "snapshots" / kCommit1;
  EXPECT_TRUE(fs::is_symlink(snapshot / "pytorch_model.bin"));
  EXPECT_FALSE(fs::exists(snapshot / "model.safetensors"));
  EXPECT_TRUE(
      fs::exists(storage("org/dat-rca-bin") / ".no_exist" / kCommit1 / "model.safetensors"));

  server_->control("reset=1");
  env_.set("HF_HUB_OFFLINE", "1");
  auto cached = da::DualAttnTransformerLM::from_pretrained(
      "org/dat-rca-bin", da::PretrainedOptions().download(options_));
  check(cached);
  EXPECT_EQ(server_->counters().value("GET", -1), 0);
}

// Issue 16: a mistyped local folder is taken for a repo id; the error says both.
TEST_F(Hub, AMistypedFolderNameSaysThatNoSuchFolderExists) {
  namespace da = dual_attention;
  try {
    da::DualAttnTransformerLM::from_pretrained("my-modle",
                                               da::PretrainedOptions().download(options_));
    FAIL() << "expected RepositoryNotFoundError";
  } catch (const hub::RepositoryNotFoundError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("hub: 'config.json' of 'my-modle'"), std::string::npos) << message;
    EXPECT_NE(message.find("nor is 'my-modle' a local folder (no such directory in " +
                           fs::current_path().string() + ")"),
              std::string::npos)
        << message;
    EXPECT_EQ(e.repo_id(), "my-modle");
  }
  // Offline, the same: the name is neither cached nor a folder.
  env_.set("HF_HUB_OFFLINE", "1");
  try {
    da::DualAttnTransformerLM::from_pretrained("my-modle",
                                               da::PretrainedOptions().download(options_));
    FAIL() << "expected LocalEntryNotFoundError";
  } catch (const hub::LocalEntryNotFoundError& e) {
    EXPECT_NE(std::string(e.what()).find("nor is 'my-modle' a local folder"), std::string::npos)
        << e.what();
  }
  // Not even a valid repo id.
  try {
    da::DualAttnTransformerLM::from_pretrained("my modle!",
                                               da::PretrainedOptions().download(options_));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("nor is 'my modle!' a local folder"), std::string::npos)
        << e.what();
  }
}

}  // namespace

#endif  // DUAL_ATTENTION_WITH_HUB
