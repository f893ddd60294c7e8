// bnorm/core/text.hpp: untrusted bytes (file contents, names from model files, command
// line strings) rendered for one-line error messages.
//
// Contract: the result is printable ASCII only (0x20 to 0x7E), so a message that quotes
// a file never carries a terminal escape, a line break or a NUL that would cut it.
//   printable("a\x1b[31mb\0c")  ->  a\x1b[31mb\x00c
//   printable_quoted(std::string(500, 'x')) -> 'xxx...xxx...' (500 bytes)
// Kept: printable ASCII except the backslash. Escaped: '\\' as \\, tab, newline and
// carriage return as \t \n \r, every other byte (controls, DEL, bytes >= 0x80 such as
// UTF-8) as \xHH in lower case. A rendering longer than `max_chars` is cut at an
// escape's boundary and ends with "..." and the input's length in bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace bnorm {

// Renders are cut after this many characters by default (before "..." and the length).
inline constexpr std::size_t kShownChars = 60;

// The bytes as printable text (see above); max_chars 0: never cut.
std::string printable(std::string_view bytes, std::size_t max_chars = kShownChars);

// printable() in single quotes: 'abc', or 'abc...' (500 bytes) when cut. (Not named
// `quoted`: for a std::string argument, lookup would also find std::quoted.)
std::string printable_quoted(std::string_view bytes, std::size_t max_chars = kShownChars);

// "1 value", "2 values": the count and the noun, singular for exactly one. `plural`
// defaults to the noun + "s".
std::string count_of(long long n, std::string_view noun, std::string_view plural = {});

}  // namespace bnorm
