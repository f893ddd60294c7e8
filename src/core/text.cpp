#include "bnorm/core/text.hpp"

#include <cstdio>

namespace bnorm {

namespace {

// One byte as it appears in a message.
std::string render(unsigned char c) {
  switch (c) {
    case '\\': return "\\\\";
    case '\t': return "\\t";
    case '\n': return "\\n";
    case '\r': return "\\r";
    default: break;
  }
  if (c >= 0x20 && c < 0x7F) return std::string(1, static_cast<char>(c));
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
  return buf;
}

std::string render_cut(std::string_view bytes, std::size_t max_chars, bool& cut) {
  std::string out;
  cut = false;
  for (const char ch : bytes) {
    const std::string piece = render(static_cast<unsigned char>(ch));
    if (max_chars != 0 && out.size() + piece.size() > max_chars) {
      cut = true;
      break;
    }
    out += piece;
  }
  return out;
}

std::string length_note(std::size_t n) {
  return " (" + std::to_string(n) + (n == 1 ? " byte)" : " bytes)");
}

}  // namespace

std::string printable(std::string_view bytes, std::size_t max_chars) {
  bool cut = false;
  std::string out = render_cut(bytes, max_chars, cut);
  if (cut) out += "..." + length_note(bytes.size());
  return out;
}

std::string printable_quoted(std::string_view bytes, std::size_t max_chars) {
  bool cut = false;
  const std::string inner = render_cut(bytes, max_chars, cut);
  return cut ? "'" + inner + "...'" + length_note(bytes.size()) : "'" + inner + "'";
}

std::string count_of(long long n, std::string_view noun, std::string_view plural) {
  std::string s = std::to_string(n) + " ";
  if (n == 1) return s + std::string(noun);
  return plural.empty() ? s + std::string(noun) + "s" : s + std::string(plural);
}

}  // namespace bnorm
