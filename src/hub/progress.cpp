#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "../clock_text.h"

namespace dual_attention::hub::detail {
namespace {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 4) {
    bytes /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f%s" : "%.1f%s", bytes, units[u]);
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total, int64_t initial, bool enabled)
    : label_(std::move(label)),
      total_(total),
      done_(initial),
      initial_(initial),
      shown_(enabled && isatty(STDERR_FILENO) && (total < 0 || total >= kMinBytes)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  if (label_.size() > 40) label_ = "(…)" + label_.substr(label_.size() - 37);
  if (shown_) draw(false);
}

ProgressBar::~ProgressBar() {
  // A transfer that failed leaves its last state on screen; just end the line.
  if (shown_ && !finished_) std::fputc('\n', stderr);
}

void ProgressBar::advance(int64_t bytes) {
  done_ += bytes;
  if (!shown_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= std::chrono::milliseconds(100)) draw(false);
}

void ProgressBar::restart(int64_t initial) {
  done_ = initial_ = initial;
  start_ = std::chrono::steady_clock::now();
}

void ProgressBar::finish() {
  if (!shown_ || finished_) return;
  draw(true);
  std::fputc('\n', stderr);
  std::fflush(stderr);
  finished_ = true;
}

void ProgressBar::draw(bool final_draw) {
  auto now = std::chrono::steady_clock::now();
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? (done_ - initial_) / elapsed : 0.0;
  std::string line = label_ + ": ";
  if (total_ > 0) {
    double fraction = std::min(1.0, double(done_) / double(total_));
    char pct[8];
    std::snprintf(pct, sizeof(pct), "%3d%%", static_cast<int>(fraction * 100));
    int filled = static_cast<int>(fraction * 20);
    line += std::string(pct) + "|" + std::string(filled, '#') + std::string(20 - filled, ' ') +
            "| " + human_bytes(done_) + "/" + human_bytes(total_);
    double eta = rate > 0 ? (total_ - done_) / rate : -1;
    line += " [" + clock_text(elapsed) + "<" + clock_text(final_draw ? 0 : eta) + ", ";
  } else {
    line += human_bytes(done_) + " [" + clock_text(elapsed) + ", ";
  }
  line += human_bytes(rate) + "/s]";
  // \r returns to the line start; \033[K clears what a longer previous line left behind.
  std::fprintf(stderr, "\r%s\033[K", line.c_str());
  std::fflush(stderr);
}

}  // namespace dual_attention::hub::detail
