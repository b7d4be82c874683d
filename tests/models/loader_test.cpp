// Strict loading: missing and unexpected weights, wrong shapes and unknown model types are errors
// that name the key and the file.
#include <filesystem>
#include <fstream>

#include "loom/common/error.h"
#include "loom/io/safetensors.h"
#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {
namespace fs = std::filesystem;

// Copies the llama fixture into a scratch folder, letting `edit` change its tensors.
fs::path scratch_copy(const std::string& tag,
                      const std::function<void(std::vector<std::pair<std::string, Array>>&)>& edit) {
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "loader_test" / tag;
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(fs::path(fixture_dir("llama")) / "config.json", dir / "config.json");
  io::SafetensorsFile::open(fixture_dir("llama") + "/model.safetensors");
  auto f = io::SafetensorsFile::open(fixture_dir("llama") + "/model.safetensors");
  std::vector<std::pair<std::string, Array>> t;
  for (const auto& info : f->tensors()) t.emplace_back(info.name, f->load(info.name));
  edit(t);
  io::save_safetensors((dir / "model.safetensors").string(), t);
  return dir;
}

std::string load_error(const fs::path& dir) {
  try {
    models::load_model(dir.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Loader, MissingWeightNamesKey) {
  auto dir = scratch_copy("missing", [](auto& t) {
    std::erase_if(t, [](auto& p) { return p.first == "model.layers.1.mlp.up_proj.weight"; });
  });
  std::string msg = load_error(dir);
  EXPECT_NE(msg.find("missing weight 'model.layers.1.mlp.up_proj.weight'"), std::string::npos) << msg;
}

TEST(Loader, UnexpectedWeightNamesKeyAndFile) {
  auto dir = scratch_copy("unexpected", [](auto& t) { t.emplace_back("model.layers.0.extra.weight", zeros({2})); });
  std::string msg = load_error(dir);
  EXPECT_NE(msg.find("unexpected weight 'model.layers.0.extra.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
}

TEST(Loader, WrongShapeNamesBothShapes) {
  auto dir = scratch_copy("shape", [](auto& t) {
    for (auto& p : t)
      if (p.first == "model.norm.weight") p.second = zeros({31});
  });
  std::string msg = load_error(dir);
  EXPECT_NE(msg.find("'model.norm.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[31]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[32]"), std::string::npos) << msg;
}

TEST(Loader, UnsupportedModelTypeListsSupported) {
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "loader_test" / "badtype";
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"model_type": "no_such_model", "hidden_size": 8})";
  try {
    models::create_model(io::Config::load(dir.string()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("unsupported model_type 'no_such_model'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("llama"), std::string::npos) << msg;
    EXPECT_NE(msg.find("qwen3"), std::string::npos) << msg;
  }
}

TEST(Loader, MissingConfigKeyIsClear) {
  fs::path dir = fs::path(LOOM_BINARY_DIR) / "loader_test" / "nokey";
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "num_hidden_layers": 2})";
  try {
    models::create_model(io::Config::load(dir.string()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing 'hidden_size'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom::test
