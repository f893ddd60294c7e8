#include "bnorm/nn/data_format.hpp"

#include <algorithm>
#include <cctype>

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}
}  // namespace

DataFormat data_format_from_name(const std::string& name, const std::string& argument) {
  const std::string n = lower(name);
  if (n == "channels_last") return DataFormat::channels_last;
  if (n == "channels_first") return DataFormat::channels_first;
  throw ArgumentError("data format", argument, "\"channels_last\" or \"channels_first\"", "\"" + name + "\"");
}

Padding padding_from_name(const std::string& name, const std::string& argument) {
  const std::string n = lower(name);
  if (n == "valid") return Padding::valid;
  if (n == "same") return Padding::same;
  if (n == "causal") return Padding::causal;
  throw ArgumentError("padding", argument, "\"valid\", \"same\" or \"causal\"", "\"" + name + "\"");
}

std::string data_format_name(DataFormat format) {
  return format == DataFormat::channels_last ? "channels_last" : "channels_first";
}

std::string padding_name(Padding padding) {
  switch (padding) {
    case Padding::valid: return "valid";
    case Padding::same: return "same";
    case Padding::causal: return "causal";
  }
  return "valid";
}

}  // namespace bnorm::nn
