// `bnorm fold MODEL -o OUT`: writes MODEL with every batch normalization that follows a
// Dense or convolution layer folded into that layer's weights (nn/fold.hpp), as a Keras
// file (.keras or legacy .h5 by OUT's suffix) that Keras loads and that predicts what
// MODEL predicts in inference mode, with one pass over the activations fewer per fold.
#include <cstdio>
#include <string>

#include "bnorm/core/text.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/fold.hpp"
#include "commands.hpp"
#include "file_checks.hpp"

namespace bnorm::cli {

namespace {

struct FoldOptions {
  std::string model;
  std::string output;
};

int run_fold(const FoldOptions& o) {
  const std::string command = "bnorm fold";
  require_distinct_output(command, "--output", o.output, {{o.model, "the MODEL file"}});
  require_model_file_name(command, "--output", o.output);
  require_writable_file(command, "--output", o.output);
  const auto model = load_model_argument(o.model, command, "MODEL");
  nn::FoldReport report;
  const auto folded = nn::fold_batch_norm(*model, &report);
  io::save_model(*folded, o.output);
  std::printf("%s: folded %d batch-normalization layer%s into the layer before %s, kept %d; saved to %s\n",
              printable(o.model, 0).c_str(), report.folded, report.folded == 1 ? "" : "s",
              report.folded == 1 ? "it" : "them", report.kept, printable(o.output, 0).c_str());
  return 0;
}

}  // namespace

Runner add_fold_command(CLI::App& app) {
  auto o = std::make_shared<FoldOptions>();
  CLI::App* cmd = app.add_subcommand(
      "fold", "Fold batch normalization into the Dense or convolution layer before it, for inference");
  cmd->footer(
      "\nIn inference a BatchNormalization layer is a fixed affine map per channel. When it follows\n"
      "a Dense, Conv1D, Conv2D, DepthwiseConv2D or SeparableConv2D layer with a linear activation\n"
      "whose output nothing else reads, the map moves into that layer's kernel and bias and the\n"
      "layer disappears. The folded model predicts what MODEL predicts in inference mode (to float\n"
      "rounding) and is written as a Keras file (.keras, or legacy .h5) that Keras loads. Batch\n"
      "normalization elsewhere (after an activation, on another axis) is kept. Do not train the\n"
      "folded model: its statistics are gone.\n"
      "\nExamples:\n"
      "  bnorm fold resnet.keras -o resnet-folded.keras\n"
      "  bnorm predict resnet.keras x.npy --fold -o y.npy    # the same, in memory");
  cmd->add_option("MODEL", o->model, "Model file (.keras, or legacy .h5)")->required();
  cmd->add_option("-o,--output", o->output, "The folded model, .keras or .h5")->required();
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    return run_fold(*o);
  };
}

}  // namespace bnorm::cli
