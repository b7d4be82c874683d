// loom_hub against a mock Hub on 127.0.0.1 (tests/hub/mock_hub.h): the cache layout huggingface_hub writes,
// file selection, request counts, resuming, authentication, errors, offline mode and the environment.
#include "loom/hub/hub.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/hub/mock_hub.h"

namespace fs = std::filesystem;

namespace loom::hub::test {
namespace {

std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path p =
      fs::path(LOOM_BINARY_DIR) / "tests" / "hub" / "tmp" / (std::string(info->test_suite_name()) + "." + info->name());
  fs::remove_all(p);
  fs::create_directories(p);
  return fs::weakly_canonical(p).string();
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Deterministic bytes with every value present (zeros included), so no text-mode or C-string bug hides.
std::string bytes_of(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x & 0xff);
  }
  return s;
}

// Sets environment variables for one test and puts the old values back afterwards.
class ScopedEnv {
 public:
  void set(const std::string& name, std::optional<std::string> value) {
    const char* old = std::getenv(name.c_str());
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    if (value) {
      ::setenv(name.c_str(), value->c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        ::unsetenv(it->first.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

const std::string kRepo = "loom-test/tiny-llama";
const std::string kCommit1 = fake_hex("commit-1", 40);
const std::string kCommit2 = fake_hex("commit-2", 40);

// Files of a typical checkpoint repository, with what mlx-lm's allow-list makes of them.
struct RepoFile {
  MockFile file;
  bool wanted;
};

std::vector<RepoFile> checkpoint_files(const std::string& config) {
  return {
      {{"config.json", config}, true},
      {{"generation_config.json", R"({"eos_token_id": 2})"}, true},
      {{"tokenizer.json", "{\"model\": {\"type\": \"BPE\"}}"}, true},
      {{"tokenizer_config.json", "{}"}, true},
      {{"chat_template.jinja", "{{ messages }}"}, true},
      {{"added_tokens.txt", ""}, true},  // an empty file is a blob too
      {{"model.safetensors.index.json", "{\"weight_map\": {}}"}, true},
      {{"model-00001-of-00002.safetensors", bytes_of(300000, 1), true}, true},
      {{"model-00002-of-00002.safetensors", bytes_of(70001, 2), true}, true},
      // fnmatch's '*' crosses '/', so mlx-lm (through huggingface_hub) fetches original/params.json too...
      {{"original/params.json", "{\"dim\": 64}"}, true},
      // ...but not the original weights, PyTorch copies or repository chrome.
      {{"original/consolidated.00.pth", bytes_of(5000, 3), true}, false},
      {{"pytorch_model.bin", bytes_of(6000, 4), true}, false},
      {{"README.md", "# tiny"}, false},
      {{".gitattributes", "*.safetensors filter=lfs"}, false},
  };
}

std::vector<MockFile> mock_files(const std::vector<RepoFile>& files) {
  std::vector<MockFile> out;
  for (const auto& f : files) out.push_back(f.file);
  return out;
}

class HubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = temp_dir();
    for (const char* name : {"HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN",
                             "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                             "XDG_CACHE_HOME", "HF_HUB_DISABLE_PROGRESS_BARS"}) {
      env_.set(name, std::nullopt);
    }
    // Never the user's real cache or token, and never a proxy between us and 127.0.0.1.
    env_.set("HF_HOME", root_ + "/hf_home");
    env_.set("NO_PROXY", "127.0.0.1,localhost");
    env_.set("no_proxy", "127.0.0.1,localhost");
    files_ = checkpoint_files("{\"model_type\": \"llama\"}");
    MockRepo repo;
    repo.id = kRepo;
    repo.commits[kCommit1] = mock_files(files_);
    repo.refs["main"] = kCommit1;
    repo.refs["v1.0"] = kCommit1;
    repo.refs["refs/pr/1"] = kCommit1;
    hub_.add_repo(repo);
  }

  HubOptions options() const {
    HubOptions o;
    o.endpoint = hub_.endpoint();
    o.cache_dir = cache();
    o.progress = false;
    return o;
  }
  std::string cache() const { return root_ + "/cache"; }
  fs::path storage() const { return fs::path(cache()) / "models--loom-test--tiny-llama"; }
  std::string etag(const std::string& path, const std::string& commit = kCommit1) const {
    return hub_.etag(kRepo, commit, path);
  }
  const std::string& content(const std::string& path) const {
    for (const auto& f : files_) {
      if (f.file.path == path) return f.file.content;
    }
    throw std::runtime_error("no file " + path);
  }

  // The whole-snapshot check: every wanted file is a relative symlink into blobs/ with the right bytes, and
  // nothing else is there.
  void expect_snapshot(const fs::path& snapshot, const std::string& commit = kCommit1) const {
    std::set<std::string> expected;
    for (const auto& f : files_) {
      if (!f.wanted) continue;
      expected.insert(f.file.path);
      fs::path p = snapshot / f.file.path;
      ASSERT_TRUE(fs::is_symlink(p)) << p;
      size_t depth = std::count(f.file.path.begin(), f.file.path.end(), '/');
      std::string up;
      for (size_t i = 0; i < depth + 2; ++i) up += "../";
      EXPECT_EQ(fs::read_symlink(p).string(), up + "blobs/" + etag(f.file.path, commit)) << p;
      EXPECT_EQ(read(p), f.file.content) << p;
    }
    std::set<std::string> found;
    for (const auto& e : fs::recursive_directory_iterator(snapshot)) {
      if (!e.is_directory()) found.insert(e.path().lexically_relative(snapshot).generic_string());
    }
    EXPECT_EQ(found, expected);
  }

  MockHub hub_;
  ScopedEnv env_;
  std::string root_;
  std::vector<RepoFile> files_;
};

// ---------------------------------------------------------------------------------------------------------
// Layout and selection

TEST_F(HubTest, DownloadWritesTheHuggingfaceHubLayout) {
  std::string snap = snapshot_download(kRepo, options());
  EXPECT_EQ(snap, (storage() / "snapshots" / kCommit1).string());
  expect_snapshot(snap);

  // refs/main holds the bare commit hash (no newline), like huggingface_hub's f.write(commit_hash).
  EXPECT_EQ(read(storage() / "refs" / "main"), kCommit1);
  EXPECT_FALSE(fs::exists(storage() / "refs" / "v1.0"));

  // blobs/ holds exactly the wanted files' ETags (LFS: the 64-hex sha256; others: the 40-hex git sha1), no
  // .incomplete left over, each a regular file.
  std::set<std::string> blobs, want;
  for (const auto& e : fs::directory_iterator(storage() / "blobs")) {
    EXPECT_TRUE(e.is_regular_file() && !e.is_symlink()) << e.path();
    blobs.insert(e.path().filename().string());
  }
  for (const auto& f : files_) {
    if (f.wanted) want.insert(etag(f.file.path));
  }
  EXPECT_EQ(blobs, want);
  EXPECT_EQ(etag("model-00001-of-00002.safetensors").size(), 64u);
  EXPECT_EQ(etag("config.json").size(), 40u);
  EXPECT_TRUE(fs::exists(fs::path(cache()) / "CACHEDIR.TAG"));
  // Python's own bookkeeping folders are the only other entries (.locks sits beside the repo folders).
  EXPECT_TRUE(fs::is_directory(fs::path(cache()) / ".locks" / "models--loom-test--tiny-llama"));
}

TEST_F(HubTest, FetchesOnlyWhatTheAllowListSelects) {
  snapshot_download(kRepo, options());
  size_t wanted = 0, lfs_wanted = 0, empty = 0;
  for (const auto& f : files_) {
    wanted += f.wanted;
    lfs_wanted += f.wanted && f.file.lfs;
    empty += f.wanted && f.file.content.empty();
  }
  // One listing, one HEAD per wanted file, one GET per wanted non-empty file (from the hub for small files,
  // from the CDN for LFS ones: an empty file has nothing to fetch); never a request for an unwanted file.
  EXPECT_EQ(hub_.count("hub", "HEAD"), wanted);
  EXPECT_EQ(hub_.count("hub", "GET"), 1 + wanted - lfs_wanted - empty);
  EXPECT_EQ(hub_.count("cdn", "GET"), lfs_wanted);
  EXPECT_EQ(hub_.count("cdn", "HEAD"), 0u);
  for (const auto& r : hub_.requests()) {
    for (const auto& f : files_) {
      if (!f.wanted) {
        EXPECT_EQ(r.path.find(f.file.path), std::string::npos) << r.path;
        if (f.file.lfs) EXPECT_EQ(r.path.find(etag(f.file.path)), std::string::npos) << r.path;
      }
    }
    EXPECT_TRUE(r.range.empty()) << r.path;          // nothing to resume
    EXPECT_TRUE(r.authorization.empty()) << r.path;  // no token configured
  }
  // Resolve URLs name the commit, not the branch: a branch moving mid-download cannot mix two commits.
  for (const auto& r : hub_.requests()) {
    if (r.server == "hub" && r.method == "HEAD") {
      EXPECT_EQ(r.path.find("/" + kRepo + "/resolve/" + kCommit1 + "/"), 0u) << r.path;
    }
  }
  EXPECT_FALSE(fs::exists(storage() / "snapshots" / kCommit1 / "pytorch_model.bin"));
  EXPECT_FALSE(fs::exists(storage() / "snapshots" / kCommit1 / "original" / "consolidated.00.pth"));
}

TEST_F(HubTest, CustomPatterns) {
  HubOptions o = options();
  o.allow_patterns = {"config.json", "original/"};  // a trailing '/' takes the whole folder
  o.ignore_patterns = {"*.json"};
  o.allow_patterns.push_back("tokenizer.json");
  std::string snap = snapshot_download(kRepo, o);
  std::set<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(snap)) {
    if (!e.is_directory()) found.insert(e.path().lexically_relative(snap).generic_string());
  }
  EXPECT_EQ(found, (std::set<std::string>{"original/consolidated.00.pth"}));

  // Empty allow-list = the whole repository.
  o.allow_patterns.clear();
  o.ignore_patterns.clear();
  snap = snapshot_download(kRepo, o);
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(snap)) n += !e.is_directory();
  EXPECT_EQ(n, files_.size());
}

TEST_F(HubTest, SecondCallOnlyAsksForTheCommit) {
  std::string first = snapshot_download(kRepo, options());
  hub_.clear_requests();
  // A branch can move, so (as huggingface_hub) the revision API is asked once; no file is touched.
  EXPECT_EQ(snapshot_download(kRepo, options()), first);
  auto seen = hub_.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "GET");
  EXPECT_EQ(seen[0].path, "/api/models/" + kRepo + "/revision/main");

  // Pinned to the commit: same, one listing and nothing else.
  hub_.clear_requests();
  HubOptions o = options();
  o.revision = kCommit1;
  EXPECT_EQ(snapshot_download(kRepo, o), first);
  EXPECT_EQ(hub_.requests().size(), 1u);

  // A tag resolving to the same commit reuses everything and gets its own ref.
  hub_.clear_requests();
  o.revision = "v1.0";
  EXPECT_EQ(snapshot_download(kRepo, o), first);
  EXPECT_EQ(hub_.requests().size(), 1u);
  EXPECT_EQ(read(storage() / "refs" / "v1.0"), kCommit1);

  // A revision with '/' travels percent-encoded and is stored under refs/ as a path, as huggingface_hub does.
  hub_.clear_requests();
  o.revision = "refs/pr/1";
  EXPECT_EQ(snapshot_download(kRepo, o), first);
  ASSERT_EQ(hub_.requests().size(), 1u);
  EXPECT_EQ(read(storage() / "refs" / "refs" / "pr" / "1"), kCommit1);

  // Offline: not a single request.
  hub_.clear_requests();
  o.revision = "main";
  o.offline = true;
  EXPECT_EQ(snapshot_download(kRepo, o), first);
  EXPECT_EQ(hub_.requests().size(), 0u);
}

// ---------------------------------------------------------------------------------------------------------
// Resuming

TEST_F(HubTest, ResumesAnInterruptedTransferInTheSameCall) {
  const std::string file = "model-00001-of-00002.safetensors";
  const std::string tag = etag(file);
  const size_t cut = 100000;
  hub_.interrupt(tag, cut, 1);
  // While the CDN streams, the snapshot must not show the file: only blobs/<etag>.incomplete exists.
  int checks = 0;
  bool leaked = false;
  hub_.on_cdn_chunk([&](const std::string& e, size_t) {
    if (e != tag) return;
    ++checks;
    leaked = leaked || fs::exists(storage() / "snapshots" / kCommit1 / file) || fs::exists(storage() / "blobs" / tag);
  });
  HubOptions o = options();
  o.progress = true;  // exercises the progress line (it goes to this test's stderr)
  std::string snap = snapshot_download(kRepo, o);
  hub_.on_cdn_chunk(nullptr);
  EXPECT_GT(checks, 2);
  EXPECT_FALSE(leaked);
  expect_snapshot(snap);

  std::vector<std::string> ranges;
  for (const auto& r : hub_.requests()) {
    if (r.server == "cdn" && r.path == "/blobs-cdn/" + tag) ranges.push_back(r.range);
  }
  EXPECT_EQ(ranges, (std::vector<std::string>{"", "bytes=" + std::to_string(cut) + "-"}));
  EXPECT_FALSE(fs::exists(storage() / "blobs" / (tag + ".incomplete")));
}

TEST_F(HubTest, BrokenDownloadKeepsThePartialFileAndTheNextCallResumesIt) {
  const std::string file = "model-00001-of-00002.safetensors";
  const std::string tag = etag(file);
  const size_t cut = 65536 + 123;
  hub_.interrupt(tag, cut, 1);
  HubOptions o = options();
  o.max_retries = 0;
  try {
    snapshot_download(kRepo, o);
    FAIL() << "expected the interrupted download to fail with max_retries = 0";
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kNetwork);
    EXPECT_NE(std::string(e.what()).find("[hub] "), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(".incomplete"), std::string::npos) << e.what();
  }
  // The partial bytes are kept under the .incomplete name only; nothing names them as complete.
  EXPECT_EQ(fs::file_size(storage() / "blobs" / (tag + ".incomplete")), cut);
  EXPECT_FALSE(fs::exists(storage() / "blobs" / tag));
  EXPECT_FALSE(fs::exists(fs::symlink_status(storage() / "snapshots" / kCommit1 / file)));
  // No ref either: the branch never points at a half-filled snapshot, so offline use fails cleanly.
  EXPECT_FALSE(fs::exists(storage() / "refs" / "main"));
  HubOptions off = options();
  off.offline = true;
  EXPECT_THROW(snapshot_download(kRepo, off), HubError);

  hub_.clear_requests();
  std::string snap = snapshot_download(kRepo, options());
  expect_snapshot(snap);
  std::vector<std::string> ranges;
  for (const auto& r : hub_.requests()) {
    if (r.server == "cdn" && r.path == "/blobs-cdn/" + tag) ranges.push_back(r.range);
  }
  EXPECT_EQ(ranges, (std::vector<std::string>{"bytes=" + std::to_string(cut) + "-"}));
  EXPECT_FALSE(fs::exists(storage() / "blobs" / (tag + ".incomplete")));
}

TEST_F(HubTest, PartialFilesFromElsewhereAreResumedOrDiscarded) {
  const std::string f1 = "model-00001-of-00002.safetensors", f2 = "model-00002-of-00002.safetensors";
  // A correct prefix left by an earlier run (loom's or Python's): resumed from its end.
  write(storage() / "blobs" / (etag(f1) + ".incomplete"), content(f1).substr(0, 4321));
  // Longer than the blob can be: not its prefix, so it is thrown away and the blob fetched whole.
  write(storage() / "blobs" / (etag(f2) + ".incomplete"), bytes_of(content(f2).size() + 10, 9));
  std::string snap = snapshot_download(kRepo, options());
  expect_snapshot(snap);
  for (const auto& r : hub_.requests()) {
    if (r.path == "/blobs-cdn/" + etag(f1)) EXPECT_EQ(r.range, "bytes=4321-");
    if (r.path == "/blobs-cdn/" + etag(f2)) EXPECT_EQ(r.range, "");
  }
}

TEST_F(HubTest, ServerIgnoringRangeRestartsTheFile) {
  const std::string file = "model-00001-of-00002.safetensors";
  write(storage() / "blobs" / (etag(file) + ".incomplete"), content(file).substr(0, 5000));
  hub_.ignore_range(true);  // answers 200 with the whole body: the partial file must not be appended to
  expect_snapshot(snapshot_download(kRepo, options()));
}

TEST_F(HubTest, RetriesAServerError) {
  const std::string tag = etag("model-00002-of-00002.safetensors");
  hub_.fail_with(tag, 503, 1);
  expect_snapshot(snapshot_download(kRepo, options()));
  EXPECT_EQ(hub_.count("cdn", "GET"), 3u);  // two shards + one retry
}

TEST_F(HubTest, BlobsAreSharedAcrossCommits) {
  snapshot_download(kRepo, options());
  // main moves to a commit where only config.json changed.
  auto files2 = checkpoint_files("{\"model_type\": \"llama\", \"changed\": true}");
  MockRepo moved;
  moved.id = kRepo;
  moved.commits[kCommit1] = mock_files(files_);
  moved.commits[kCommit2] = mock_files(files2);
  moved.refs["main"] = kCommit2;
  hub_.add_repo(moved);  // replaces the first registration
  hub_.clear_requests();
  std::string snap2 = snapshot_download(kRepo, options());
  EXPECT_EQ(snap2, (storage() / "snapshots" / kCommit2).string());
  EXPECT_EQ(read(storage() / "refs" / "main"), kCommit2);
  // Every file was asked about (a new snapshot folder), but only the changed one was downloaded.
  EXPECT_EQ(hub_.count("cdn", "GET"), 0u);
  size_t gets = 0;
  for (const auto& r : hub_.requests()) gets += r.method == "GET" && r.path.find("/resolve/") != std::string::npos;
  EXPECT_EQ(gets, 1u);
  EXPECT_EQ(read(fs::path(snap2) / "config.json"), files2[0].file.content);
  EXPECT_EQ(fs::read_symlink(fs::path(snap2) / "model-00001-of-00002.safetensors").string(),
            "../../blobs/" + etag("model-00001-of-00002.safetensors"));
  // The old snapshot is untouched.
  expect_snapshot(storage() / "snapshots" / kCommit1);
}

// ---------------------------------------------------------------------------------------------------------
// A cache written by Python's huggingface_hub

TEST_F(HubTest, ReusesAPythonWrittenCacheEntry) {
  // Built by hand exactly as huggingface_hub lays it out.
  fs::path snap = storage() / "snapshots" / kCommit1;
  for (const auto& f : files_) {
    if (!f.wanted) continue;
    write(storage() / "blobs" / etag(f.file.path), f.file.content);
    fs::path pointer = snap / f.file.path;
    fs::create_directories(pointer.parent_path());
    fs::create_symlink(fs::path(storage() / "blobs" / etag(f.file.path)).lexically_relative(pointer.parent_path()),
                       pointer);
  }
  write(storage() / "refs" / "main", kCommit1);
  auto mtime = fs::last_write_time(storage() / "blobs" / etag("model-00001-of-00002.safetensors"));

  EXPECT_EQ(snapshot_download(kRepo, options()), snap.string());
  EXPECT_EQ(hub_.requests().size(), 1u);  // the listing only
  EXPECT_EQ(fs::last_write_time(storage() / "blobs" / etag("model-00001-of-00002.safetensors")), mtime);
  expect_snapshot(snap);

  // A blob Python already has but no pointer to it yet (e.g. fetched for another revision): HEAD, no GET.
  fs::remove(snap / "tokenizer.json");
  hub_.clear_requests();
  snapshot_download(kRepo, options());
  EXPECT_EQ(hub_.count("hub", "HEAD"), 1u);
  EXPECT_EQ(hub_.count("hub", "GET"), 1u);  // the listing
  EXPECT_EQ(hub_.count("cdn"), 0u);
  expect_snapshot(snap);
}

// ---------------------------------------------------------------------------------------------------------
// Authentication and errors

TEST_F(HubTest, GatedRepositoryNeedsTheRightToken) {
  MockRepo gated;
  gated.id = "loom-test/gated";
  gated.gated = true;
  gated.token = "hf_secret";
  gated.commits[kCommit1] = {{"config.json", "{}"}, {"model.safetensors", bytes_of(1000, 5), true}};
  gated.refs["main"] = kCommit1;
  hub_.add_repo(gated);

  try {
    snapshot_download("loom-test/gated", options());
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kAuth);
    EXPECT_EQ(e.http_status(), 401);
    EXPECT_EQ(e.hub_error_code(), "GatedRepo");
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("[hub] ", 0), 0u) << msg;
    EXPECT_NE(msg.find("gated"), std::string::npos) << msg;
    EXPECT_NE(msg.find("HF_TOKEN"), std::string::npos) << msg;
    EXPECT_NE(msg.find("no token was sent"), std::string::npos) << msg;
  }
  HubOptions o = options();
  o.token = "hf_wrong";
  try {
    snapshot_download("loom-test/gated", o);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kAuth);
    EXPECT_EQ(e.http_status(), 403);
    EXPECT_NE(std::string(e.what()).find("was not accepted"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::path(cache()) / "models--loom-test--gated" / "refs"));

  // The token from HF_TOKEN works; it goes to the hub but never to the CDN (whose URL is pre-signed).
  hub_.clear_requests();
  env_.set("HF_TOKEN", "hf_secret");
  std::string snap = snapshot_download("loom-test/gated", options());
  EXPECT_EQ(read(fs::path(snap) / "model.safetensors"), bytes_of(1000, 5));
  for (const auto& r : hub_.requests()) {
    EXPECT_EQ(r.authorization, r.server == "hub" ? "Bearer hf_secret" : "") << r.server << " " << r.path;
  }
  EXPECT_EQ(hub_.count("cdn", "GET"), 1u);

  // An explicit option wins over the environment.
  env_.set("HF_TOKEN", "hf_wrong");
  o.token = "hf_secret";
  o.revision = kCommit1;
  EXPECT_EQ(snapshot_download("loom-test/gated", o), snap);
}

TEST_F(HubTest, TokenFileIsUsedWhenNoVariableIsSet) {
  MockRepo gated;
  gated.id = "loom-test/gated";
  gated.gated = true;
  gated.token = "hf_from_file";
  gated.commits[kCommit1] = {{"config.json", "{}"}};
  gated.refs["main"] = kCommit1;
  hub_.add_repo(gated);
  write(fs::path(root_) / "hf_home" / "token", "hf_from_file\n");  // as huggingface-cli login writes it
  EXPECT_EQ(resolve_config(options()).token, "hf_from_file");
  EXPECT_NO_THROW(snapshot_download("loom-test/gated", options()));
}

TEST_F(HubTest, MissingRepositoryRevisionOrFile) {
  // Anonymous callers are told 401 (the Hub does not reveal whether a private repository exists).
  try {
    snapshot_download("loom-test/nope", options());
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kAuth);
    EXPECT_EQ(e.http_status(), 401);
    std::string msg = e.what();
    EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
    EXPECT_NE(msg.find("HF_TOKEN"), std::string::npos) << msg;
  }
  HubOptions o = options();
  o.token = "hf_any";
  try {
    snapshot_download("loom-test/nope", o);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kNotFound);
    EXPECT_EQ(e.http_status(), 404);
    EXPECT_EQ(e.hub_error_code(), "RepoNotFound");
    EXPECT_NE(std::string(e.what()).find("repository 'loom-test/nope' not found"), std::string::npos) << e.what();
  }
  o = options();
  o.revision = "no-such-branch";
  try {
    snapshot_download(kRepo, o);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kNotFound);
    EXPECT_EQ(e.hub_error_code(), "RevisionNotFound");
    EXPECT_NE(std::string(e.what()).find("revision 'no-such-branch' not found"), std::string::npos) << e.what();
  }
  // A repository with nothing mlx-lm can load (a GGUF-only repository, say).
  MockRepo gguf;
  gguf.id = "loom-test/gguf-only";
  gguf.commits[kCommit1] = {{"model.gguf", bytes_of(100, 1), true}, {"README.md", "hi"}};
  gguf.refs["main"] = kCommit1;
  hub_.add_repo(gguf);
  try {
    snapshot_download("loom-test/gguf-only", options());
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("matches the allow patterns"), std::string::npos) << e.what();
  }
  EXPECT_THROW(snapshot_download("not a repo id", options()), HubError);
  EXPECT_THROW(snapshot_download("a/b/c", options()), HubError);
}

TEST_F(HubTest, RefusesFileNamesThatEscapeTheSnapshot) {
  MockRepo evil;
  evil.id = "loom-test/evil";
  evil.commits[kCommit1] = {{"../../../escape.json", "{}"}, {"config.json", "{}"}};
  evil.refs["main"] = kCommit1;
  hub_.add_repo(evil);
  try {
    snapshot_download("loom-test/evil", options());
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kProtocol);
  }
  EXPECT_FALSE(fs::exists(fs::path(cache()) / "escape.json"));
  EXPECT_FALSE(fs::exists(fs::path(root_) / "escape.json"));
}

TEST_F(HubTest, FollowsARenamedRepositoryRedirect) {
  MockRepo old_name;
  old_name.id = "loom-test/old-name";
  old_name.renamed_to = kRepo;
  hub_.add_repo(old_name);
  std::string snap = snapshot_download("loom-test/old-name", options());
  // Stored under the name asked for, as huggingface_hub does.
  EXPECT_EQ(snap, (fs::path(cache()) / "models--loom-test--old-name" / "snapshots" / kCommit1).string());
  expect_snapshot(snap);
}

TEST_F(HubTest, UnreachableHubFallsBackToTheCacheOrSaysWhy) {
  HubOptions dead = options();
  dead.endpoint = "http://127.0.0.1:1";  // nothing listens on port 1
  try {
    snapshot_download(kRepo, dead);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kNetwork);
    std::string msg = e.what();
    EXPECT_NE(msg.find("cannot reach http://127.0.0.1:1/api/models/"), std::string::npos) << msg;
    EXPECT_NE(msg.find("refs/main"), std::string::npos) << msg;
  }
  std::string snap = snapshot_download(kRepo, options());
  EXPECT_EQ(snapshot_download(kRepo, dead), snap);  // as huggingface_hub: the cached snapshot serves
}

// ---------------------------------------------------------------------------------------------------------
// Offline mode and the environment

TEST_F(HubTest, OfflineModeServesTheCacheAndNamesWhatIsMissing) {
  env_.set("HF_HUB_OFFLINE", "1");
  try {
    snapshot_download(kRepo, options());
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kOffline);
    std::string msg = e.what();
    EXPECT_NE(msg.find((storage() / "refs" / "main").string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("HF_HUB_OFFLINE"), std::string::npos) << msg;
  }
  EXPECT_EQ(hub_.requests().size(), 0u);

  env_.set("HF_HUB_OFFLINE", "0");
  std::string snap = snapshot_download(kRepo, options());
  hub_.clear_requests();
  env_.set("HF_HUB_OFFLINE", "true");
  EXPECT_EQ(snapshot_download(kRepo, options()), snap);
  HubOptions pinned = options();
  pinned.revision = kCommit1;
  EXPECT_EQ(snapshot_download(kRepo, pinned), snap);
  EXPECT_EQ(hub_.requests().size(), 0u);

  // A commit never downloaded: the snapshot folder is named.
  pinned.revision = kCommit2;
  try {
    snapshot_download(kRepo, pinned);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kOffline);
    EXPECT_NE(std::string(e.what()).find((storage() / "snapshots" / kCommit2).string()), std::string::npos) << e.what();
  }
  // A blob deleted behind the cache's back: the dangling file is named.
  fs::remove(storage() / "blobs" / etag("tokenizer.json"));
  try {
    snapshot_download(kRepo, options());
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kOffline);
    EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
  }
  // huggingface_hub's trees/<commit>.json, when Python wrote one, lists files that must be there.
  write(storage() / "blobs" / etag("tokenizer.json"), content("tokenizer.json"));
  write(storage() / "trees" / (kCommit1 + ".json"),
        R"({"format_version": 1, "files": {"config.json": {"size": 1, "blob_id": "x"},)"
        R"( "merges.txt": {"size": 1, "blob_id": "y"}, "pytorch_model.bin": {"size": 1, "blob_id": "z"}}})");
  try {
    snapshot_download(kRepo, options());
    FAIL();
  } catch (const HubError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("merges.txt"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("pytorch_model.bin"), std::string::npos) << msg;  // not wanted, so not missing
  }
  // TRANSFORMERS_OFFLINE counts only while HF_HUB_OFFLINE is unset; the option beats both.
  fs::remove(storage() / "trees" / (kCommit1 + ".json"));
  env_.set("HF_HUB_OFFLINE", std::nullopt);
  env_.set("TRANSFORMERS_OFFLINE", "YES");
  EXPECT_TRUE(resolve_config(options()).offline);
  env_.set("HF_HUB_OFFLINE", "0");
  EXPECT_FALSE(resolve_config(options()).offline);
  HubOptions forced = options();
  forced.offline = true;
  EXPECT_TRUE(resolve_config(forced).offline);
  EXPECT_EQ(hub_.requests().size(), 0u);
}

TEST_F(HubTest, EnvironmentChoosesCacheEndpointAndToken) {
  HubOptions bare;  // everything from the environment
  bare.progress = false;
  env_.set("HF_ENDPOINT", hub_.endpoint() + "/");  // a trailing slash is tolerated, as in huggingface_hub
  std::string home = root_ + "/home";
  env_.set("HF_HOME", home);
  HubConfig c = resolve_config(bare);
  EXPECT_EQ(c.endpoint, hub_.endpoint());
  EXPECT_EQ(c.cache_dir, home + "/hub");
  EXPECT_FALSE(c.offline);
  EXPECT_TRUE(c.token.empty());
  std::string snap = snapshot_download(kRepo, bare);
  EXPECT_EQ(snap, home + "/hub/models--loom-test--tiny-llama/snapshots/" + kCommit1);
  expect_snapshot(snap);

  // HF_HUB_CACHE beats HF_HOME; the legacy HUGGINGFACE_HUB_CACHE is used only without it.
  env_.set("HUGGINGFACE_HUB_CACHE", root_ + "/legacy");
  EXPECT_EQ(resolve_config(bare).cache_dir, root_ + "/legacy");
  env_.set("HF_HUB_CACHE", root_ + "/hubcache");
  EXPECT_EQ(resolve_config(bare).cache_dir, root_ + "/hubcache");
  snap = snapshot_download(kRepo, bare);
  EXPECT_EQ(snap, root_ + "/hubcache/models--loom-test--tiny-llama/snapshots/" + kCommit1);
  // Options beat the environment.
  HubOptions o = options();
  EXPECT_EQ(resolve_config(o).cache_dir, cache());

  // Without HF_HOME: XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
  env_.set("HF_HUB_CACHE", std::nullopt);
  env_.set("HUGGINGFACE_HUB_CACHE", std::nullopt);
  env_.set("HF_HOME", std::nullopt);
  env_.set("XDG_CACHE_HOME", root_ + "/xdg");
  EXPECT_EQ(resolve_config(bare).cache_dir, root_ + "/xdg/huggingface/hub");
  env_.set("XDG_CACHE_HOME", std::nullopt);
  env_.set("HOME", root_ + "/userhome");
  EXPECT_EQ(resolve_config(bare).cache_dir, root_ + "/userhome/.cache/huggingface/hub");
  env_.set("HF_ENDPOINT", std::nullopt);
  EXPECT_EQ(resolve_config(bare).endpoint, "https://huggingface.co");
  env_.set("HF_TOKEN", "hf_env");
  EXPECT_EQ(resolve_config(bare).token, "hf_env");
}

// ---------------------------------------------------------------------------------------------------------
// Model paths

TEST_F(HubTest, ResolveModelPath) {
  fs::create_directories(fs::path(root_) / "local-model");
  std::string local = root_ + "/local-model";
  EXPECT_EQ(resolve_model_path(local, options()), local);
  EXPECT_EQ(hub_.requests().size(), 0u);
  EXPECT_EQ(resolve_model_path(kRepo, options()), (storage() / "snapshots" / kCommit1).string());
  try {
    resolve_model_path(root_ + "/missing/folder/x", options());
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), HubErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("neither an existing local folder nor"), std::string::npos);
  }
}

TEST(HubRepoId, LooksLikeRepoId) {
  // An existing relative folder shaped like a repo id is a local path: check from inside a temporary folder.
  std::string dir = temp_dir();
  fs::create_directories(fs::path(dir) / "org" / "local-model");
  fs::path old_cwd = fs::current_path();
  fs::current_path(dir);
  bool local_is_repo = looks_like_repo_id("org/local-model");
  bool other_is_repo = looks_like_repo_id("org/remote-model");
  fs::current_path(old_cwd);
  EXPECT_FALSE(local_is_repo);
  EXPECT_TRUE(other_is_repo);

  EXPECT_TRUE(looks_like_repo_id("mlx-community/Llama-3.2-1B-Instruct-4bit"));
  EXPECT_TRUE(looks_like_repo_id("Qwen/Qwen3-0.6B"));
  EXPECT_TRUE(looks_like_repo_id("a_b/c.d"));
  EXPECT_FALSE(looks_like_repo_id("gpt2"));  // no organisation: could as well be a local folder
  EXPECT_FALSE(looks_like_repo_id("a/b/c"));
  EXPECT_FALSE(looks_like_repo_id("/abs/path"));
  EXPECT_FALSE(looks_like_repo_id("./model"));
  EXPECT_FALSE(looks_like_repo_id("../model"));
  EXPECT_FALSE(looks_like_repo_id("org/"));
  EXPECT_FALSE(looks_like_repo_id("org/na--me"));
  EXPECT_FALSE(looks_like_repo_id("org/na..me"));
  EXPECT_FALSE(looks_like_repo_id("org/-name"));
  EXPECT_FALSE(looks_like_repo_id("org/name.git"));
  EXPECT_FALSE(looks_like_repo_id("org/na me"));
  EXPECT_FALSE(looks_like_repo_id(""));
}

// ---------------------------------------------------------------------------------------------------------
// Pattern matching: Python's fnmatch.fnmatchcase, as huggingface_hub filters with it.

TEST(HubPatterns, FnmatchSemantics) {
  EXPECT_TRUE(match_pattern("*.json", "config.json"));
  EXPECT_TRUE(match_pattern("*.json", "original/params.json"));  // '*' crosses '/'
  EXPECT_FALSE(match_pattern("*.json", "config.json.bak"));
  EXPECT_TRUE(match_pattern("model*.safetensors", "model.safetensors"));
  EXPECT_TRUE(match_pattern("model*.safetensors", "model-00001-of-00002.safetensors"));
  EXPECT_FALSE(match_pattern("model*.safetensors", "consolidated.safetensors"));
  EXPECT_FALSE(match_pattern("model*.safetensors", "original/model.safetensors"));
  EXPECT_FALSE(match_pattern("tokenizer.model", "tokenizer_model"));  // '.' is literal
  EXPECT_TRUE(match_pattern("?.txt", "a.txt"));
  EXPECT_FALSE(match_pattern("?.txt", "ab.txt"));
  EXPECT_TRUE(match_pattern("?.txt", "\xc3\xa9.txt"));  // '?' is one code point, not one byte
  EXPECT_TRUE(match_pattern("[a-c]x", "bx"));
  EXPECT_FALSE(match_pattern("[a-c]x", "dx"));
  EXPECT_TRUE(match_pattern("[!a-c]x", "dx"));
  EXPECT_TRUE(match_pattern("[]]", "]"));
  EXPECT_TRUE(match_pattern("[!]]", "a"));
  EXPECT_TRUE(match_pattern("[-a]", "-"));
  EXPECT_TRUE(match_pattern("a[", "a["));  // no closing bracket: literal
  EXPECT_TRUE(match_pattern("original/", "original/consolidated.00.pth"));
  EXPECT_FALSE(match_pattern("original/", "original"));
  EXPECT_TRUE(match_pattern("*", ""));
  EXPECT_TRUE(match_pattern("**/*.py", "a/b/c.py"));
  EXPECT_FALSE(match_pattern("**/*.py", "c.py"));  // needs the '/' itself
  EXPECT_TRUE(match_pattern("*a*b*c*", "xxaxxbxxcxx"));
  EXPECT_FALSE(match_pattern("*a*b*c*", "xxaxxcxxbxx"));
  EXPECT_FALSE(match_pattern("*.JSON", "config.json"));  // case-sensitive everywhere
}

TEST(HubPatterns, MlxLmDefaultList) {
  auto p = default_allow_patterns();
  EXPECT_EQ(p, (std::vector<std::string>{"*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken",
                                         "tiktoken.model", "*.txt", "*.jsonl", "*.jinja"}));
  for (const char* yes : {"config.json", "model.safetensors", "tokenizer.model", "merges.txt", "vocab.tiktoken",
                          "chat_template.jinja", "modeling_x.py", "added.jsonl"}) {
    EXPECT_TRUE(is_allowed(yes, p, {})) << yes;
  }
  for (const char* no : {"pytorch_model.bin", "original/consolidated.00.pth", "README.md", ".gitattributes",
                         "model.gguf", "consolidated.safetensors", "spiece.model"}) {
    EXPECT_FALSE(is_allowed(no, p, {})) << no;
  }
  EXPECT_FALSE(is_allowed("config.json", p, {"config.*"}));
  EXPECT_TRUE(is_allowed("anything", {}, {}));
}

}  // namespace
}  // namespace loom::hub::test
