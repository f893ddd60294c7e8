// Batch normalization folded into the layer before it (nn/fold.hpp): predictions within
// relative 1e-5 of the unfolded model for every foldable producer (Dense, Conv1D, Conv2D
// with and without bias and grouped, DepthwiseConv2D, SeparableConv2D, both data
// formats), the pairs that must stay (an activation in between, a shared output, another
// axis), nested models, and the original left unchanged.
#include <gtest/gtest.h>

#include <cmath>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/conv.hpp"
#include "bnorm/nn/fold.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/merge.hpp"
#include "bnorm/nn/spatial.hpp"

using namespace bnorm;
using A2 = std::array<std::int64_t, 2>;

namespace {

Tensor wave(Shape s, float scale, float offset, float phase) {
  Tensor t(std::move(s));
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = offset + scale * std::sin(0.37f * static_cast<float>(i) + phase);
  return t;
}

// Moving statistics and gamma/beta away from their initial values.
void randomize_batch_norms(nn::Model& model) {
  float phase = 0.1f;
  for (const auto& [path, layer] : model.flattened_layers()) {
    auto* bn = dynamic_cast<nn::BatchNormalization*>(layer.get());
    if (!bn) continue;
    std::vector<Tensor> w = bn->get_weights();
    for (std::size_t k = 0; k < w.size(); ++k) {
      const bool variance = bn->weights()[k]->name == "moving_variance";
      w[k] = wave(w[k].shape(), variance ? 0.5f : 0.7f, variance ? 1.2f : 0.3f, phase += 0.9f);
    }
    bn->set_weights(w);
  }
}

nn::BatchNormalizationOptions bn_axis(int axis, const std::string& name = "") {
  nn::BatchNormalizationOptions o;
  o.axis = {axis};
  o.name = name;
  return o;
}

void expect_same_predictions(nn::Model& model, const Tensor& x, int want_folded, int want_kept) {
  randomize_batch_norms(model);
  const std::vector<Tensor> before = model.get_weights();
  const Tensor y = model.predict(x);
  nn::FoldReport report;
  auto folded = nn::fold_batch_norm(model, &report);
  EXPECT_EQ(report.folded, want_folded);
  EXPECT_EQ(report.kept, want_kept);
  const Tensor z = folded->predict(x);
  ASSERT_EQ(z.shape(), y.shape());
  double largest = 0, worst = 0;
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    largest = std::max(largest, std::abs(static_cast<double>(y[i])));
    worst = std::max(worst, std::abs(static_cast<double>(y[i]) - z[i]));
  }
  EXPECT_LE(worst, 1e-5 * largest) << "largest output " << largest;
  int bns = 0;
  for (const auto& [path, layer] : folded->flattened_layers()) bns += dynamic_cast<nn::BatchNormalization*>(layer.get()) != nullptr;
  EXPECT_EQ(bns, want_kept);
  const std::vector<Tensor> after = model.get_weights();  // the original is unchanged
  ASSERT_EQ(before.size(), after.size());
  for (std::size_t k = 0; k < before.size(); ++k) EXPECT_EQ(before[k].vector(), after[k].vector());
  EXPECT_EQ(model.predict(x).vector(), y.vector());
}

}  // namespace

TEST(Fold, SequentialDense) {
  nn::Sequential model({std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{6}),
                        std::make_shared<nn::Dense>(5), std::make_shared<nn::BatchNormalization>(),
                        std::make_shared<nn::Activation>("relu"),
                        std::make_shared<nn::Dense>(4, nn::DenseOptions{.use_bias = false}),
                        std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.center = false}),
                        std::make_shared<nn::Dense>(3, nn::DenseOptions{.activation = "relu"}),
                        std::make_shared<nn::BatchNormalization>()});  // after a relu: kept
  expect_same_predictions(model, wave(Shape{7, 6}, 2.0f, 0.5f, 0.0f), 2, 1);
}

TEST(Fold, ConvolutionsInBothDataFormats) {
  for (auto format : {nn::DataFormat::channels_last, nn::DataFormat::channels_first}) {
    const bool last = format == nn::DataFormat::channels_last;
    const int ch = last ? -1 : 1;
    auto in = nn::Input(last ? std::vector<std::int64_t>{9, 9, 4} : std::vector<std::int64_t>{4, 9, 9});
    auto z = (*std::make_shared<nn::Conv2D>(6, A2{3, 3},
                                            nn::Conv2DOptions{.padding = nn::Padding::same, .data_format = format, .use_bias = false}))(in);
    z = (*std::make_shared<nn::BatchNormalization>(bn_axis(last ? 3 : 1)))(z);
    z = (*std::make_shared<nn::ReLU>())(z);
    z = (*std::make_shared<nn::DepthwiseConv2D>(A2{3, 3}, nn::DepthwiseConv2DOptions{.depth_multiplier = 2, .strides = {2, 2},
                                                                                     .data_format = format}))(z);
    z = (*std::make_shared<nn::BatchNormalization>(bn_axis(ch)))(z);
    z = (*std::make_shared<nn::SeparableConv2D>(5, A2{3, 3}, nn::SeparableConv2DOptions{.padding = nn::Padding::same,
                                                                                        .data_format = format}))(z);
    z = (*std::make_shared<nn::BatchNormalization>(bn_axis(ch)))(z);
    auto g = (*std::make_shared<nn::Conv2D>(4, A2{1, 1}, nn::Conv2DOptions{.data_format = format, .groups = 1}))(z);
    auto branch = (*std::make_shared<nn::BatchNormalization>(bn_axis(ch)))(g);
    auto other = (*std::make_shared<nn::BatchNormalization>(bn_axis(ch)))(g);  // g read twice: both kept
    z = (*std::make_shared<nn::Add>())({branch, other});
    auto grouped = (*std::make_shared<nn::Conv2D>(6, A2{1, 1}, nn::Conv2DOptions{.data_format = format, .groups = 2}))(z);
    z = (*std::make_shared<nn::BatchNormalization>(bn_axis(ch)))(grouped);
    z = (*std::make_shared<nn::GlobalAveragePooling2D>(nn::GlobalPooling2DOptions{.data_format = format}))(z);
    nn::Model model(in, z);
    const Tensor x = wave(last ? Shape{3, 9, 9, 4} : Shape{3, 4, 9, 9}, 1.5f, 0.2f, 0.4f);
    expect_same_predictions(model, x, 4, 2);
  }
}

TEST(Fold, Conv1DAndNestedModels) {
  auto in = nn::Input({12, 3});
  auto c = (*std::make_shared<nn::Conv1D>(4, 3, nn::Conv1DOptions{.padding = nn::Padding::causal}))(in);
  auto base = std::make_shared<nn::Model>(in, (*std::make_shared<nn::BatchNormalization>())(c), "base");
  auto x = nn::Input({12, 3});
  auto z = (*base)(x, false);
  z = (*std::make_shared<nn::Flatten>())(z);
  z = (*std::make_shared<nn::Dense>(2))(z);
  z = (*std::make_shared<nn::BatchNormalization>())(z);
  nn::Model model(x, z);
  expect_same_predictions(model, wave(Shape{5, 12, 3}, 1.0f, -0.3f, 1.1f), 2, 0);
}

TEST(Fold, AnotherAxisOrAnOutputIsKept) {
  auto in = nn::Input({4, 5});
  auto d = (*std::make_shared<nn::Dense>(5))(in);
  auto z = (*std::make_shared<nn::BatchNormalization>(bn_axis(1)))(d);  // normalizes axis 1, not Dense's channels
  nn::Model model(in, z);
  expect_same_predictions(model, wave(Shape{3, 4, 5}, 1.0f, 0.0f, 0.2f), 0, 1);
  nn::Sequential unbuilt({std::make_shared<nn::Dense>(3)});
  EXPECT_THROW(nn::fold_batch_norm(unbuilt), StateError);
}
