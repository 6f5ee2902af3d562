// "mm:ss", or "h:mm:ss" from an hour on, for a duration in seconds; "--:--" when it is unknown
// (negative, not finite) or longer than 99:59:59. The elapsed and remaining times of the progress
// bars: training's (training.cpp) and the Hub download's (hub/progress.cpp).
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace dual_attention {

inline std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 359999) return "--:--";
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%02ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

}  // namespace dual_attention
