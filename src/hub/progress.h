// A one-line progress bar on stderr (bytes, percent, rate, ETA), redrawn at most ten times a
// second.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dual_attention::hub::detail {

class ProgressBar {
 public:
  // Shown only if `enabled`, stderr is a terminal and the file is large enough (or of unknown
  // size).
  ProgressBar(std::string label, int64_t total, int64_t initial, bool enabled);
  ~ProgressBar();
  void advance(int64_t bytes);
  void restart(int64_t initial);  // the server ignored a Range request: counting starts again
  void finish();                  // draws the final state and ends the line

  static constexpr int64_t kMinBytes = int64_t(4) << 20;

 private:
  void draw(bool final_draw);
  std::string label_;
  int64_t total_, done_, initial_;
  bool shown_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace dual_attention::hub::detail
