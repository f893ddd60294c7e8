#include <gtest/gtest.h>

#include "bnorm/core/error.hpp"
#include "bnorm/core/tensor.hpp"

using bnorm::Shape;
using bnorm::Tensor;

TEST(Shape, NumelAndPythonStyleString) {
  EXPECT_EQ(Shape({3, 2}).numel(), 6);
  EXPECT_EQ(Shape({}).numel(), 1);
  EXPECT_EQ(Shape({3, 2}).str(), "(3, 2)");
  EXPECT_EQ(Shape({5}).str(), "(5,)");
}

TEST(Shape, NormalizeAxisAcceptsNegativeAndNamesBadAxis) {
  EXPECT_EQ(bnorm::normalize_axis(-1, 4, "test"), 3);
  EXPECT_EQ(bnorm::normalize_axis(0, 4, "test"), 0);
  try {
    bnorm::normalize_axis(3, 2, "BatchNormalization 'bn'");
    FAIL() << "no exception";
  } catch (const bnorm::ArgumentError& e) {
    EXPECT_EQ(e.argument(), "axis");
    EXPECT_EQ(e.received(), "3");
    EXPECT_NE(std::string(e.what()).find("rank 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(bnorm::normalize_axis(-3, 2, "t"), bnorm::ArgumentError);
}

TEST(Tensor, ConstructionChecksDataSize) {
  EXPECT_THROW(Tensor(Shape{2, 2}, std::vector<float>{1, 2, 3}), bnorm::ShapeError);
  Tensor t(Shape{2, 3}, std::vector<float>{0, 1, 2, 3, 4, 5});
  EXPECT_EQ(t.at({1, 2}), 5.0f);
  EXPECT_EQ(t.at({0, 1}), 1.0f);
  EXPECT_THROW(t.at({2, 0}), bnorm::ShapeError);
  EXPECT_THROW(t.at({0}), bnorm::ShapeError);
  EXPECT_THROW(Tensor(Shape{-1, 2}), bnorm::ShapeError);
}

TEST(Tensor, ReshapeKeepsDataAndChecksCount) {
  Tensor t(Shape{2, 3}, std::vector<float>{0, 1, 2, 3, 4, 5});
  Tensor r = t.reshaped(Shape{3, 2});
  EXPECT_EQ(r.at({2, 1}), 5.0f);
  EXPECT_THROW(t.reshaped(Shape{4, 2}), bnorm::ShapeError);
}

TEST(Tensor, PermuteMatchesNumpyTranspose) {
  // x[i, j, k] = 100 i + 10 j + k, shape (2, 3, 4); transpose (2, 0, 1) -> (4, 2, 3).
  Tensor x(Shape{2, 3, 4});
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) x.at({i, j, k}) = static_cast<float>(100 * i + 10 * j + k);
  Tensor p = bnorm::permute(x, {2, 0, 1});
  ASSERT_EQ(p.shape(), (Shape{4, 2, 3}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_EQ(p.at({k, i, j}), x.at({i, j, k}));
  Tensor back = bnorm::permute(p, {1, 2, 0});
  EXPECT_EQ(back.vector(), x.vector());
  EXPECT_THROW(bnorm::permute(x, {0, 0, 1}), bnorm::ArgumentError);
  EXPECT_THROW(bnorm::permute(x, {0, 1}), bnorm::ArgumentError);
}

TEST(Tensor, AllFinite) {
  std::vector<float> v{1.0f, 2.0f};
  EXPECT_TRUE(bnorm::all_finite(v));
  v.push_back(std::numeric_limits<float>::quiet_NaN());
  EXPECT_FALSE(bnorm::all_finite(v));
}

TEST(Error, MessageNamesWhereArgumentExpectedReceived) {
  bnorm::ShapeError e("BatchNormalization 'bn'", "input axis 1", "size 3", "size 4");
  EXPECT_STREQ(e.what(), "BatchNormalization 'bn': input axis 1: expected size 3, received size 4");
  const bnorm::Error& base = e;
  EXPECT_EQ(base.expected(), "size 3");
}
