// 2-D convolution: the description's arithmetic (sizes, checks, "same" padding) and the
// permanent reference kernels. Contract and formulas: bnorm/kernels/conv.hpp. The fast
// path (oneDNN) is conv_dnnl.cpp.
#include <cassert>
#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/conv.hpp"

namespace bnorm::kernels {

namespace {

// Output size along one axis with explicit padding; 0 when the dilated kernel does not fit.
std::int64_t out_size(std::int64_t in, std::int64_t pad_before, std::int64_t pad_after, std::int64_t k,
                      std::int64_t stride, std::int64_t dilation) {
  const std::int64_t span = in + pad_before + pad_after - ((k - 1) * dilation + 1);
  if (span < 0 || stride < 1) return 0;
  return span / stride + 1;
}

}  // namespace

std::int64_t Conv2dDesc::out_h() const noexcept {
  return out_size(H, pad_top, pad_bottom, kh, stride_h, dilation_h);
}

std::int64_t Conv2dDesc::out_w() const noexcept {
  return out_size(W, pad_left, pad_right, kw, stride_w, dilation_w);
}

void conv2d_check(const Conv2dDesc& d, const std::string& where) {
  auto positive = [&](std::int64_t v, const char* name) {
    if (v < 1) throw ArgumentError(where, name, "a positive integer", std::to_string(v));
  };
  auto non_negative = [&](std::int64_t v, const char* name) {
    if (v < 0) throw ArgumentError(where, name, "a non-negative integer", std::to_string(v));
  };
  non_negative(d.N, "N");
  positive(d.H, "H");
  positive(d.W, "W");
  positive(d.Cin, "Cin");
  positive(d.Cout, "Cout");
  positive(d.kh, "kh");
  positive(d.kw, "kw");
  positive(d.stride_h, "stride_h");
  positive(d.stride_w, "stride_w");
  positive(d.dilation_h, "dilation_h");
  positive(d.dilation_w, "dilation_w");
  non_negative(d.pad_top, "pad_top");
  non_negative(d.pad_left, "pad_left");
  non_negative(d.pad_bottom, "pad_bottom");
  non_negative(d.pad_right, "pad_right");
  positive(d.groups, "groups");
  if (d.Cin % d.groups != 0) {
    throw ArgumentError(where, "groups", "a divisor of the input channels (" + std::to_string(d.Cin) + ")",
                        std::to_string(d.groups));
  }
  if (d.Cout % d.groups != 0) {
    throw ArgumentError(where, "groups", "a divisor of the output channels (" + std::to_string(d.Cout) + ")",
                        std::to_string(d.groups));
  }
  auto fits = [&](std::int64_t in, std::int64_t before, std::int64_t after, std::int64_t k, std::int64_t dil,
                  const char* axis) {
    const std::int64_t eff = (k - 1) * dil + 1;
    if (eff > in + before + after) {
      throw ShapeError(
          where, std::string("kernel ") + axis,
          "a (dilated) kernel no larger than the padded input (" + std::to_string(in) + " + " +
              std::to_string(before) + " + " + std::to_string(after) + ")",
          std::to_string(eff) + " (kernel " + std::to_string(k) + ", dilation " + std::to_string(dil) + ")");
    }
  };
  fits(d.H, d.pad_top, d.pad_bottom, d.kh, d.dilation_h, "height");
  fits(d.W, d.pad_left, d.pad_right, d.kw, d.dilation_w, "width");
}

SamePadding same_padding(std::int64_t in, std::int64_t kernel, std::int64_t stride, std::int64_t dilation) {
  assert(in >= 0 && kernel >= 1 && stride >= 1 && dilation >= 1);
  SamePadding p;
  p.out = (in + stride - 1) / stride;
  const std::int64_t total = (p.out - 1) * stride + (kernel - 1) * dilation + 1 - in;
  const std::int64_t t = total > 0 ? total : 0;
  p.before = t / 2;
  p.after = t - p.before;
  return p;
}

std::int64_t valid_output_size(std::int64_t in, std::int64_t kernel, std::int64_t stride,
                               std::int64_t dilation) {
  return out_size(in, 0, 0, kernel, stride, dilation);
}

namespace reference {
namespace {

// Flat offsets of x[n, h, w, c] (Cin channels) and y[n, oh, ow, f] in either layout.
struct Indexer {
  std::int64_t H, W, C;
  bool nchw;
  std::int64_t operator()(std::int64_t n, std::int64_t h, std::int64_t w, std::int64_t c) const {
    return nchw ? ((n * C + c) * H + h) * W + w : ((n * H + h) * W + w) * C + c;
  }
};

// Calls f(x_offset, y_offset, kernel_offset) for every term x * kernel of the sums in
// conv.hpp whose input position lies inside the image (padding contributes 0).
template <typename F>
void for_each_term(const Conv2dDesc& d, F&& f) {
  const std::int64_t OH = d.out_h(), OW = d.out_w(), cin_g = d.cin_per_group(), cout_g = d.Cout / d.groups;
  const Indexer xi{d.H, d.W, d.Cin, d.layout == ConvLayout::nchw};
  const Indexer yi{OH, OW, d.Cout, d.layout == ConvLayout::nchw};
  for (std::int64_t n = 0; n < d.N; ++n)
    for (std::int64_t oh = 0; oh < OH; ++oh)
      for (std::int64_t ow = 0; ow < OW; ++ow)
        for (std::int64_t oc = 0; oc < d.Cout; ++oc) {
          const std::int64_t g = oc / cout_g;
          const std::int64_t y_off = yi(n, oh, ow, oc);
          for (std::int64_t i = 0; i < d.kh; ++i) {
            const std::int64_t h = oh * d.stride_h + i * d.dilation_h - d.pad_top;
            if (h < 0 || h >= d.H) continue;
            for (std::int64_t j = 0; j < d.kw; ++j) {
              const std::int64_t w = ow * d.stride_w + j * d.dilation_w - d.pad_left;
              if (w < 0 || w >= d.W) continue;
              for (std::int64_t c = 0; c < cin_g; ++c) {
                const std::int64_t k_off = ((i * d.kw + j) * cin_g + c) * d.Cout + oc;
                f(xi(n, h, w, g * cin_g + c), y_off, k_off);
              }
            }
          }
        }
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dDesc& d, const T* x, const T* kernel, const T* bias, T* y) {
  assert(d.out_h() >= 1 && d.out_w() >= 1 && d.Cin % d.groups == 0 && d.Cout % d.groups == 0);
  const Indexer yi{d.out_h(), d.out_w(), d.Cout, d.layout == ConvLayout::nchw};
  std::vector<double> sum(static_cast<std::size_t>(d.y_size()), 0.0);
  if (bias != nullptr) {
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t oh = 0; oh < yi.H; ++oh)
        for (std::int64_t ow = 0; ow < yi.W; ++ow)
          for (std::int64_t f = 0; f < d.Cout; ++f)
            sum[static_cast<std::size_t>(yi(n, oh, ow, f))] = static_cast<double>(bias[f]);
  }
  for_each_term(d, [&](std::int64_t x_off, std::int64_t y_off, std::int64_t k_off) {
    sum[static_cast<std::size_t>(y_off)] +=
        static_cast<double>(x[x_off]) * static_cast<double>(kernel[k_off]);
  });
  for (std::size_t i = 0; i < sum.size(); ++i) y[i] = static_cast<T>(sum[i]);
}

template <typename T>
void conv2d_backward_data(const Conv2dDesc& d, const T* dy, const T* kernel, T* dx) {
  assert(d.out_h() >= 1 && d.out_w() >= 1 && d.Cin % d.groups == 0 && d.Cout % d.groups == 0);
  std::vector<double> sum(static_cast<std::size_t>(d.x_size()), 0.0);
  for_each_term(d, [&](std::int64_t x_off, std::int64_t y_off, std::int64_t k_off) {
    sum[static_cast<std::size_t>(x_off)] +=
        static_cast<double>(dy[y_off]) * static_cast<double>(kernel[k_off]);
  });
  for (std::size_t i = 0; i < sum.size(); ++i) dx[i] = static_cast<T>(sum[i]);
}

template <typename T>
void conv2d_backward_weights(const Conv2dDesc& d, const T* x, const T* dy, T* dkernel, T* dbias) {
  assert(d.out_h() >= 1 && d.out_w() >= 1 && d.Cin % d.groups == 0 && d.Cout % d.groups == 0);
  if (dkernel != nullptr) {
    std::vector<double> sum(static_cast<std::size_t>(d.kernel_size()), 0.0);
    for_each_term(d, [&](std::int64_t x_off, std::int64_t y_off, std::int64_t k_off) {
      sum[static_cast<std::size_t>(k_off)] += static_cast<double>(x[x_off]) * static_cast<double>(dy[y_off]);
    });
    for (std::size_t i = 0; i < sum.size(); ++i) {
      dkernel[i] = static_cast<T>(static_cast<double>(dkernel[i]) + sum[i]);
    }
  }
  if (dbias != nullptr) {
    const Indexer yi{d.out_h(), d.out_w(), d.Cout, d.layout == ConvLayout::nchw};
    for (std::int64_t f = 0; f < d.Cout; ++f) {
      double sum = 0.0;
      for (std::int64_t n = 0; n < d.N; ++n)
        for (std::int64_t oh = 0; oh < yi.H; ++oh)
          for (std::int64_t ow = 0; ow < yi.W; ++ow) sum += static_cast<double>(dy[yi(n, oh, ow, f)]);
      dbias[f] = static_cast<T>(static_cast<double>(dbias[f]) + sum);
    }
  }
}

template void conv2d_forward<float>(const Conv2dDesc&, const float*, const float*, const float*, float*);
template void conv2d_forward<double>(const Conv2dDesc&, const double*, const double*, const double*, double*);
template void conv2d_backward_data<float>(const Conv2dDesc&, const float*, const float*, float*);
template void conv2d_backward_data<double>(const Conv2dDesc&, const double*, const double*, double*);
template void conv2d_backward_weights<float>(const Conv2dDesc&, const float*, const float*, float*, float*);
template void conv2d_backward_weights<double>(const Conv2dDesc&, const double*, const double*, double*,
                                              double*);

}  // namespace reference
}  // namespace bnorm::kernels
