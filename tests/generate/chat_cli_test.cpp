// `loom chat` and `loom perplexity` end to end on the tiny random llama with the real Qwen3 tokenizer
// (whose tokenizer_config.json carries Qwen3's chat template).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "loom/generate/session.h"
#include "tests/generate/cli_util.h"

using namespace loom;
using namespace loom::gentest;

namespace {

// The loom binary as a child with a writable stdin and a readable stdout+stderr.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int in[2], out[2];
    EXPECT_EQ(pipe(in), 0);
    EXPECT_EQ(pipe(out), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      dup2(out[1], STDERR_FILENO);
      close(in[1]);
      close(out[0]);
      std::vector<char*> argv;
      std::string bin = LOOM_CLI_PATH;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  ~Child() {
    if (to_ >= 0) close(to_);
    close(from_);
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  void write_line(const std::string& s) {
    std::string line = s + "\n";
    ASSERT_EQ(write(to_, line.data(), line.size()), static_cast<ssize_t>(line.size()));
  }
  void close_input() {
    close(to_);
    to_ = -1;
  }
  // Reads until `needle` has appeared after byte `from` of the output (or the timeout).
  bool wait_for(const std::string& needle, size_t from = 0, double seconds = 60) {
    return read_until([&] { return output_.find(needle, from) != std::string::npos; }, seconds);
  }
  // Reads until the output holds at least n bytes (or the timeout).
  bool wait_for_size(size_t n, double seconds = 60) {
    return read_until([&] { return output_.size() >= n; }, seconds);
  }
  void interrupt() { kill(pid_, SIGINT); }
  // Reads the rest of the output and the exit status; a child still running after `seconds` is
  // killed and reported as -1 (so a hang fails the test instead of stalling the suite).
  int finish(double seconds = 60) {
    int st = 0;
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (waitpid(pid_, &st, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > end) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
        reaped_ = true;
        return -1;
      }
      read_until([] { return false; }, 0.1);
    }
    reaped_ = true;
    char buf[4096];
    ssize_t n;
    while ((n = read(from_, buf, sizeof buf)) > 0) output_.append(buf, static_cast<size_t>(n));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  const std::string& output() const { return output_; }

 private:
  template <typename Done>
  bool read_until(Done done, double seconds) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!done()) {
      if (std::chrono::steady_clock::now() > end) return false;
      pollfd p{from_, POLLIN, 0};
      if (poll(&p, 1, 100) > 0) {
        char buf[4096];
        ssize_t n = read(from_, buf, sizeof buf);
        if (n <= 0) return done();
        output_.append(buf, static_cast<size_t>(n));
      }
    }
    return true;
  }

  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  bool reaped_ = false;
  std::string output_;
};

// The greedy answer to one user message as `loom chat` builds it (chat template, generation prompt).
std::string greedy_answer(const std::string& message, int n) {
  auto& s = session();
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  msgs.push_back({{"role", "user"}, {"content", message}});
  std::string text = generate::render_chat(s, msgs, false, {});
  return s.tokenizer.decode(oracle_greedy(*s.loaded.model, s.tokenizer.encode(text, false), n, s.eos_ids));
}

}  // namespace

TEST(ChatCli, PipedTurnsStreamTheGreedyAnswerAndResetClearsTheCache) {
  // From a pipe every input line is echoed after the prompt; 'r' starts over, so the answer after it
  // is again the answer to a first message; 'q' ends the session with status 0.
  CliRun r = run_cli("chat --model " + tiny_model() + " -m 6 < /dev/null");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;  // end of input ends the session
  std::string in = scratch("chat_input") + ".txt";
  std::ofstream(in) << "Hello there\nr\nHello there\nq\n";
  CliRun c = run_cli("chat --model " + tiny_model() + " -m 6 --temp 0 < " + in);
  std::filesystem::remove(in);
  ASSERT_EQ(c.rc, 0) << c.err;
  std::string answer = greedy_answer("Hello there", 6);
  ASSERT_FALSE(answer.empty());
  std::string turn = ">> Hello there\n" + answer + "\n";
  size_t first = c.out.find(turn);
  ASSERT_NE(first, std::string::npos) << c.out;
  EXPECT_NE(c.out.find(">> r\n>> " + turn.substr(3), first + turn.size()), std::string::npos) << c.out;
  EXPECT_NE(c.out.find(">> q\n"), std::string::npos) << c.out;
}

TEST(ChatCli, CtrlCStopsTheAnswerNotTheProgram) {
  // A long answer (no token limit below the context window) is interrupted once it streams; the
  // REPL then takes the next line ('q') and exits normally.
  Child chat({"chat", "--model", tiny_model(), "-m", "3000", "--temp", "0"});
  chat.write_line("Tell me a long story");
  ASSERT_TRUE(chat.wait_for(">> Tell me a long story\n")) << chat.output();
  size_t echo_end = chat.output().find(">> Tell me a long story\n") + 24;
  // Wait until some answer text has streamed, then interrupt.
  ASSERT_TRUE(chat.wait_for_size(echo_end + 8)) << "no answer text streamed: " << chat.output();
  chat.interrupt();
  ASSERT_TRUE(chat.wait_for("[INFO] answer interrupted", echo_end)) << chat.output();
  chat.write_line("q");
  chat.close_input();
  EXPECT_EQ(chat.finish(), 0) << chat.output();
  EXPECT_NE(chat.output().find(">> q\n"), std::string::npos) << chat.output();
}

TEST(ChatCli, CtrlCAtThePromptEndsTheSession) {
  Child chat({"chat", "--model", tiny_model()});
  ASSERT_TRUE(chat.wait_for(">> ")) << chat.output();
  chat.interrupt();
  EXPECT_EQ(chat.finish(), 0) << chat.output();
}

TEST(PerplexityCli, EqualsTheNegativeLogLikelihoodOfEachWindow) {
  // Oracle: the same windows (16 tokens, each from an empty cache) scored here from the model's full
  // pass in double precision: exp(mean over positions t of logsumexp(logits_t) - logits_t[next]).
  auto& s = session();
  std::string text =
      "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
      "How vexingly quick daft zebras jump; sphinx of black quartz, judge my vow.";
  std::string file = scratch("perplexity_text") + ".txt";
  std::ofstream(file) << text;
  CliRun r = run_cli("perplexity --model " + tiny_model() + " --file " + file + " --sequence-length 16");
  std::filesystem::remove(file);
  ASSERT_EQ(r.rc, 0) << r.err;
  double got = 0;
  long long count = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str(), "Perplexity: %lf (%lld tokens", &got, &count), 2) << r.out;

  std::vector<int32_t> ids = s.tokenizer.encode(text, true);
  double nll = 0;
  long long n = 0;
  for (size_t b = 0; b + 1 < ids.size(); b += 16) {
    size_t e = std::min(ids.size(), b + 16);
    int64_t L = static_cast<int64_t>(e - b);
    if (L < 2) break;
    std::vector<int32_t> w(ids.begin() + b, ids.begin() + e);
    models::Cache cache = s.loaded.model->make_cache();
    Array logits = s.loaded.model->forward(Array::from(w, {1, L}), cache, models::LogitsMode::all);
    std::vector<float> l = logits.to_float_vector();
    int64_t V = logits.shape(-1);
    for (int64_t t = 0; t + 1 < L; ++t) {
      double mx = -INFINITY, sum = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(l[t * V + v]));
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(l[t * V + v]) - mx);
      nll += mx + std::log(sum) - l[t * V + w[t + 1]];
      ++n;
    }
  }
  EXPECT_EQ(count, n);
  double want = std::exp(nll / static_cast<double>(n));
  EXPECT_NEAR(got, want, 1e-3 * want) << r.out;  // the CLI prints 3 decimals
  EXPECT_GT(want, 1.0);
}
