// Fused batch norm + ReLU in models (Model::fused_pairs, BatchNormalization::forward_relu):
// the pair runs as one call with the fused kernels, and everything is bit for bit what the
// two calls give: outputs, input gradients through a GradientTape, and the weights and
// moving statistics after several fit steps (Dense, channels-last and channels-first
// CNNs, nested models, a frozen base, a frozen batch normalization in a trainable
// model). A batch normalization whose output goes elsewhere too, or is the model's
// output, and ReLUs with arguments are not fused; a failed step changes nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/conv.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/merge.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/spatial.hpp"
#include "nn/test_util.hpp"

using namespace bnorm;
using A2 = std::array<std::int64_t, 2>;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0;
}

void expect_same_weights(nn::Model& a, nn::Model& b) {
  const std::vector<Tensor> wa = a.get_weights(), wb = b.get_weights();
  ASSERT_EQ(wa.size(), wb.size());
  const std::vector<nn::Variable*> vars = a.weights();
  for (std::size_t i = 0; i < wa.size(); ++i)
    EXPECT_TRUE(same_bits(wa[i], wb[i])) << "weight " << i << " " << vars[i]->name;
}

nn::BatchNormalizationOptions bn_axis(int axis) {
  nn::BatchNormalizationOptions o;
  o.axis = {axis};
  o.momentum = 0.8;  // moving statistics that move visibly in a few steps
  return o;
}

using Builder = std::function<std::shared_ptr<nn::Model>()>;

// Two copies of the model (same weights, gamma/beta and moving statistics moved off their
// initial values), the second with fusion off.
std::pair<std::shared_ptr<nn::Model>, std::shared_ptr<nn::Model>> twins(const Builder& build) {
  auto fused = build(), plain = build();
  std::vector<Tensor> w = fused->get_weights();
  for (std::size_t i = 0; i < w.size(); ++i) {
    const Tensor r = test::random_tensor(w[i].shape(), static_cast<std::uint32_t>(i + 11), 0.3f);
    const bool variance = fused->weights()[i]->name == "moving_variance";
    for (std::int64_t k = 0; k < w[i].numel(); ++k) w[i][k] = variance ? 1.0f + r[k] : w[i][k] + r[k];
  }
  fused->set_weights(w);
  plain->set_weights(w);
  plain->set_fuse_batch_norm_relu(false);
  return {fused, plain};
}

// fit for 3 epochs of 3 steps, the predictions, and a tape's input gradient.
void expect_fused_exact(const Builder& build, const Shape& x_shape, const Shape& y_shape,
                        std::size_t want_pairs) {
  auto [fused, plain] = twins(build);
  EXPECT_EQ(fused->fused_pairs().size(), want_pairs);
  EXPECT_TRUE(plain->fused_pairs().empty());
  const Tensor x = test::random_tensor(x_shape, 3, 1.5f, 0.2f);
  const Tensor y = test::random_tensor(y_shape, 4);
  for (auto* m : {fused.get(), plain.get()}) m->compile("adam", "mse");
  fused->fit(x, y, {.batch_size = 4, .epochs = 3, .verbose = 0, .seed = 7});
  plain->fit(x, y, {.batch_size = 4, .epochs = 3, .verbose = 0, .seed = 7});
  expect_same_weights(*fused, *plain);
  EXPECT_TRUE(same_bits(fused->predict(x), plain->predict(x)));
  nn::GradientTape ta, tb;
  const Tensor ya = fused->call(x, true, &ta), yb = plain->call(x, true, &tb);
  EXPECT_TRUE(same_bits(ya, yb));
  const Tensor dy = test::random_tensor(ya.shape(), 5);
  const std::vector<Tensor> ga = ta.gradient(dy, fused->trainable_weights());
  const std::vector<Tensor> gb = tb.gradient(dy, plain->trainable_weights());
  ASSERT_EQ(ga.size(), gb.size());
  for (std::size_t i = 0; i < ga.size(); ++i) EXPECT_TRUE(same_bits(ga[i], gb[i])) << "gradient " << i;
  EXPECT_TRUE(same_bits(ta.input_gradient(), tb.input_gradient()));
  expect_same_weights(*fused, *plain);  // the training calls updated both alike
}

std::shared_ptr<nn::Model> dense_model() {
  return std::make_shared<nn::Sequential>(std::vector<nn::LayerPtr>{
      std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{5}), std::make_shared<nn::Dense>(6),
      std::make_shared<nn::BatchNormalization>(bn_axis(-1)), std::make_shared<nn::Activation>("relu"),
      std::make_shared<nn::Dense>(4), std::make_shared<nn::BatchNormalization>(bn_axis(-1)),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Dense>(2)});
}

std::shared_ptr<nn::Model> cnn_model(nn::DataFormat format) {
  const int axis = format == nn::DataFormat::channels_last ? -1 : 1;
  auto in = nn::Input(format == nn::DataFormat::channels_last ? std::vector<std::int64_t>{6, 6, 2}
                                                              : std::vector<std::int64_t>{2, 6, 6});
  auto z = (*std::make_shared<nn::Conv2D>(
      4, A2{3, 3}, nn::Conv2DOptions{.padding = nn::Padding::same, .data_format = format}))(in);
  z = (*std::make_shared<nn::BatchNormalization>(bn_axis(axis)))(z);
  z = (*std::make_shared<nn::ReLU>())(z);
  auto branch = (*std::make_shared<nn::Conv2D>(
      4, A2{3, 3}, nn::Conv2DOptions{.padding = nn::Padding::same, .data_format = format}))(z);
  branch = (*std::make_shared<nn::BatchNormalization>(bn_axis(axis)))(branch);
  branch = (*std::make_shared<nn::Activation>("relu"))(branch);
  z = (*std::make_shared<nn::Add>())(std::vector<nn::SymbolicTensor>{z, branch});
  z = (*std::make_shared<nn::GlobalAveragePooling2D>(nn::GlobalPooling2DOptions{.data_format = format}))(z);
  z = (*std::make_shared<nn::Dense>(3))(z);
  return std::make_shared<nn::Model>(in, z);
}

TEST(FusedBatchNormRelu, DenseSequentialFitsBitForBit) {
  expect_fused_exact(dense_model, Shape{12, 5}, Shape{12, 2}, 2);
}

TEST(FusedBatchNormRelu, ChannelsLastCnnFitsBitForBit) {
  expect_fused_exact([] { return cnn_model(nn::DataFormat::channels_last); }, Shape{10, 6, 6, 2},
                     Shape{10, 3}, 2);
}

TEST(FusedBatchNormRelu, ChannelsFirstCnnFitsBitForBit) {
  expect_fused_exact([] { return cnn_model(nn::DataFormat::channels_first); }, Shape{10, 2, 6, 6},
                     Shape{10, 3}, 2);
}

// The Keras transfer-learning shape: a base model (with its own pairs) called with
// training=False, trainable or frozen, and a pair whose batch normalization is frozen.
std::shared_ptr<nn::Model> nested_model(bool freeze_base) {
  auto base = cnn_model(nn::DataFormat::channels_last);
  if (freeze_base) base->set_trainable(false);
  auto in = nn::Input({6, 6, 2});
  auto z = (*base)(in, false);
  z = (*std::make_shared<nn::Dense>(4))(z);
  auto frozen = std::make_shared<nn::BatchNormalization>(bn_axis(-1));
  frozen->set_trainable(false);
  z = (*frozen)(z);
  z = (*std::make_shared<nn::Activation>("relu"))(z);
  z = (*std::make_shared<nn::Dense>(2))(z);
  return std::make_shared<nn::Model>(in, z);
}

TEST(FusedBatchNormRelu, NestedAndFrozenFitBitForBit) {
  expect_fused_exact([] { return nested_model(true); }, Shape{9, 6, 6, 2}, Shape{9, 2}, 1);
  expect_fused_exact([] { return nested_model(false); }, Shape{9, 6, 6, 2}, Shape{9, 2}, 1);
  auto [fused, plain] = twins([] { return nested_model(false); });
  auto base = std::dynamic_pointer_cast<nn::Model>(fused->layers()[0]);
  ASSERT_TRUE(base);
  EXPECT_EQ(base->fused_pairs().size(), 2u);
  auto plain_base = std::dynamic_pointer_cast<nn::Model>(plain->layers()[0]);
  EXPECT_TRUE(plain_base->fused_pairs().empty());  // set_fuse_batch_norm_relu reaches nested models
}

TEST(FusedBatchNormRelu, OnlyTheBatchNormsOnlyReaderIsFused) {
  auto in = nn::Input({4});
  auto d = (*std::make_shared<nn::Dense>(4))(in);
  auto shared = (*std::make_shared<nn::BatchNormalization>())(d);  // read by a ReLU and by Add
  auto r = (*std::make_shared<nn::ReLU>())(shared);
  auto sum = (*std::make_shared<nn::Add>())(std::vector<nn::SymbolicTensor>{shared, r});
  auto capped = (*std::make_shared<nn::BatchNormalization>())(sum);
  capped = (*std::make_shared<nn::ReLU>(nn::ReLUOptions{.max_value = 6.0}))(capped);  // not a plain ReLU
  auto leaky = (*std::make_shared<nn::BatchNormalization>())(capped);
  leaky = (*std::make_shared<nn::LeakyReLU>())(leaky);
  auto last = (*std::make_shared<nn::BatchNormalization>())(leaky);  // the model's output
  nn::Model model(in, last);
  EXPECT_TRUE(model.fused_pairs().empty());

  nn::BatchNormalizationOptions renorm;
  renorm.renorm = true;
  nn::Sequential variant({std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{3}),
                          std::make_shared<nn::BatchNormalization>(renorm),
                          std::make_shared<nn::Activation>("relu")});
  EXPECT_TRUE(variant.fused_pairs().empty());
}

// layer_input stops between the two calls: the batch normalization's own output.
TEST(FusedBatchNormRelu, LayerInputSeesTheUnfusedOutput) {
  auto [fused, plain] = twins(dense_model);
  const Tensor x = test::random_tensor(Shape{6, 5}, 9);
  EXPECT_TRUE(same_bits(fused->layer_input(x, 2), plain->layer_input(x, 2)));
  EXPECT_TRUE(same_bits(fused->layer_input(x, 3), plain->layer_input(x, 3)));
}

TEST(FusedBatchNormRelu, FailedStepChangesNothing) {
  auto [fused, plain] = twins(dense_model);
  fused->compile("adam", "mse");
  const std::vector<Tensor> before = fused->get_weights();
  const Tensor x = test::random_tensor(Shape{6, 5}, 9);
  EXPECT_THROW(fused->train_on_batch(x, Tensor(Shape{6, 3})), ShapeError);
  Tensor bad = x;
  bad[4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(fused->train_on_batch(bad, Tensor(Shape{6, 2})), NumericalError);
  const std::vector<Tensor> after = fused->get_weights();
  for (std::size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(same_bits(before[i], after[i])) << i;
  auto bn = std::dynamic_pointer_cast<nn::BatchNormalization>(fused->layers()[1]);
  ASSERT_TRUE(bn);
  std::unique_ptr<nn::LayerContext> context;
  const std::vector<Tensor> bn_before = bn->get_weights();
  EXPECT_THROW(bn->forward_relu(Tensor(Shape{2, 5}), true, &context, nullptr), ShapeError);
  EXPECT_FALSE(context);
  const std::vector<Tensor> bn_after = bn->get_weights();
  for (std::size_t i = 0; i < bn_before.size(); ++i) EXPECT_TRUE(same_bits(bn_before[i], bn_after[i])) << i;
}

}  // namespace
