// The pre-tokenizer regex on PCRE2. tiktoken's patterns are written for Rust's regex crate (through
// fancy-regex); PCRE2 reads the same syntax, but three escapes and one anchor mean something else
// there, so the pattern is rewritten before compiling:
//   \s  Rust: White_Space.  PCRE2 (UCP): Z, the ASCII spaces, NEL and U+180E.   -> \p{White_Space}
//   \S  its complement                                                          -> \P{White_Space}
//   \w  Rust: Alphabetic, M, Nd, Pc, Join_Control.  PCRE2 (UCP): L, N, _.       -> that union
//   \W  its complement (outside classes only; inside one it is an "unsupported" error)
//   $   Rust (no m flag): the end of the text.  PCRE2: also before a final \n.  ->
//   PCRE2_DOLLAR_ENDONLY
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer_impl.h"

namespace dual_attention::detail {

namespace {

constexpr const char* kWordClass = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control})";

std::string to_pcre2_syntax(const std::string& pat, const std::string& source) {
  std::string out;
  out.reserve(pat.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < pat.size(); ++i) {
    const char c = pat[i];
    if (c == '\\' && i + 1 < pat.size()) {
      const char e = pat[++i];
      switch (e) {
        case 's':
          out += R"(\p{White_Space})";
          break;
        case 'S':
          out += R"(\P{White_Space})";
          break;
        case 'w':
          out += in_class ? std::string(kWordClass) : "[" + std::string(kWordClass) + "]";
          break;
        case 'W':
          if (in_class)
            throw TokenizerError(source + ": pattern: \\W inside a character class (at offset " +
                                 std::to_string(i - 1) + ") is unsupported");
          out += "[^" + std::string(kWordClass) + "]";
          break;
        case 'Q':  // \Q...\E: literal text, copied as it is
        {
          const size_t end = pat.find("\\E", i + 1);
          const size_t stop = end == std::string::npos ? pat.size() : end + 2;
          out += pat.substr(i - 1, stop - (i - 1));
          i = stop - 1;
          break;
        }
        default:
          out += c;
          out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < pat.size() && pat[i + 1] == '^') out += pat[++i];
      if (i + 1 < pat.size() && pat[i + 1] == ']') out += pat[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < pat.size() && pat[i + 1] == ':') {  // [:alpha:]
      const size_t end = pat.find(":]", i + 2);
      if (end != std::string::npos) {
        out += pat.substr(i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

// Per thread: match data with one pair of offsets, and a JIT stack large enough for long runs
// of whitespace (\s+(?!\S) backtracks over them).
struct MatchResources {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  MatchResources() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchResources() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchResources& match_resources() {
  thread_local MatchResources resources;
  if (!resources.data || !resources.context || !resources.stack) throw std::bad_alloc();
  return resources;
}

}  // namespace

Pattern::Pattern(const std::string& pat_str, const std::string& source) {
  const std::string translated = to_pcre2_syntax(pat_str, source);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
  if (!code)
    throw TokenizerError(source + ": pattern " + pat_str +
                         " does not compile: " + pcre2_message(error) + " (at offset " +
                         std::to_string(offset) + " of its PCRE2 form " + translated + ")");
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Pattern::~Pattern() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Pattern::next(std::string_view text, size_t from, size_t& start, size_t& end) const {
  MatchResources& r = match_resources();
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  while (from < text.size()) {
    // The text was checked once by the caller: PCRE2 would otherwise check all of the rest of it
    // at every call, which is quadratic.
    const int rc =
        jit_ ? pcre2_jit_match(code, subject, text.size(), from, PCRE2_NO_UTF_CHECK, r.data,
                               r.context)
             : pcre2_match(code, subject, text.size(), from, PCRE2_NO_UTF_CHECK, r.data, r.context);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0)
      throw TokenizerError("tokenizer: the pattern failed on the text at byte " +
                           std::to_string(from) + ": " + pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(r.data);
    if (ov[1] > ov[0]) {
      start = ov[0];
      end = ov[1];
      return true;
    }
    // An empty match: go on after the character it sits on.
    from = ov[0] + 1;
    while (from < text.size() && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) ++from;
  }
  return false;
}

}  // namespace dual_attention::detail
