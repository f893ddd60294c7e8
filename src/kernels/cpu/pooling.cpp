// Pooling and spatial kernels: one plain implementation each, which is the reference.
// Contract, formulas, tie and padding rules: bnorm/kernels/pooling.hpp.
//
// Both layouts go through the same loops with per-layout element strides. The loop
// order n, oh, ow, c, window keeps the working set small in both: in NHWC the channels
// of one window are neighbours; in NCHW the C planes' window rows are reused by the next
// output pixel.
#include "bnorm/kernels/pooling.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <limits>

namespace bnorm::kernels {

namespace {

// Element strides of an image batch in its layout.
struct Strides {
  std::int64_t n, h, w, c;
};

Strides strides_of(const ImageShape& s) {
  if (s.layout == SpatialLayout::nhwc) return {s.H * s.W * s.C, s.W * s.C, s.C, 1};
  return {s.C * s.H * s.W, s.W, 1, s.H * s.W};
}

std::int64_t offset(const Strides& st, std::int64_t n, std::int64_t h, std::int64_t w, std::int64_t c) {
  return n * st.n + h * st.h + w * st.w + c * st.c;
}

// The real cells of one window along one axis: [begin, end).
struct Span {
  std::int64_t begin, end;
};

Span window_span(std::int64_t o, std::int64_t stride, std::int64_t pad_before, std::int64_t k,
                 std::int64_t n) {
  const std::int64_t start = o * stride - pad_before;
  return {std::max<std::int64_t>(start, 0), std::min(start + k, n)};
}

// v replaces the running maximum m: strictly greater (the first maximum stays), or the
// first NaN (which then stays: nothing compares greater than NaN).
template <typename T>
bool replaces_max(T v, T m) {
  return v > m || (std::isnan(v) && !std::isnan(m));
}

[[maybe_unused]] bool valid_pool(const Pool2d& p) {
  const auto& s = p.input;
  return s.N >= 0 && s.H >= 0 && s.W >= 0 && s.C >= 0 && p.pool_h >= 1 && p.pool_w >= 1 && p.stride_h >= 1 &&
         p.stride_w >= 1 && p.pad_top >= 0 && p.pad_left >= 0 && p.out_h >= 0 && p.out_w >= 0 &&
         p.pad_top < p.pool_h && p.pad_left < p.pool_w &&
         (p.out_h == 0 || (p.out_h - 1) * p.stride_h - p.pad_top < s.H) &&
         (p.out_w == 0 || (p.out_w - 1) * p.stride_w - p.pad_left < s.W);
}

// Calls f(n, oh, ow, c, rows, cols, output offset) for every output element.
template <typename F>
void for_each_window(const Pool2d& p, F f) {
  const Strides sy = strides_of(p.output());
  for (std::int64_t n = 0; n < p.input.N; ++n)
    for (std::int64_t oh = 0; oh < p.out_h; ++oh) {
      const Span rows = window_span(oh, p.stride_h, p.pad_top, p.pool_h, p.input.H);
      for (std::int64_t ow = 0; ow < p.out_w; ++ow) {
        const Span cols = window_span(ow, p.stride_w, p.pad_left, p.pool_w, p.input.W);
        for (std::int64_t c = 0; c < p.input.C; ++c) f(n, c, rows, cols, offset(sy, n, oh, ow, c));
      }
    }
}

// Calls f(n, h, w, c) for every element of an image batch of shape s.
template <typename F>
void for_each_pixel(const ImageShape& s, F f) {
  for (std::int64_t n = 0; n < s.N; ++n)
    for (std::int64_t h = 0; h < s.H; ++h)
      for (std::int64_t w = 0; w < s.W; ++w)
        for (std::int64_t c = 0; c < s.C; ++c) f(n, h, w, c);
}

// The sum, in double, of channel c of image n over the cells rows x cols.
template <typename T>
double window_sum(const T* x, const Strides& sx, std::int64_t n, std::int64_t c, Span rows, Span cols) {
  double sum = 0.0;
  for (std::int64_t h = rows.begin; h < rows.end; ++h)
    for (std::int64_t w = cols.begin; w < cols.end; ++w)
      sum += static_cast<double>(x[offset(sx, n, h, w, c)]);
  return sum;
}

// The offset of the first maximum (replaces_max, row-major order) of channel c of image
// n over the cells rows x cols; -1 when there are none. x[that offset] is the maximum
// that a running max from -inf finds.
template <typename T>
std::int64_t first_max(const T* x, const Strides& sx, std::int64_t n, std::int64_t c, Span rows, Span cols) {
  std::int64_t arg = -1;
  for (std::int64_t h = rows.begin; h < rows.end; ++h)
    for (std::int64_t w = cols.begin; w < cols.end; ++w) {
      const std::int64_t i = offset(sx, n, h, w, c);
      if (arg < 0 || replaces_max(x[i], x[arg])) arg = i;
    }
  return arg;
}

template <typename T>
T max_or_minus_inf(const T* x, std::int64_t arg) {
  return arg >= 0 ? x[arg] : -std::numeric_limits<T>::infinity();
}

// The upsampled shape: H * size_h by W * size_w.
ImageShape upsampled(const ImageShape& s, std::int64_t size_h, std::int64_t size_w) {
  return {s.N, s.H * size_h, s.W * size_w, s.C, s.layout};
}

}  // namespace

AxisWindow window_valid(std::int64_t n, std::int64_t k, std::int64_t s, std::int64_t d) {
  assert(n >= 0 && k >= 1 && s >= 1 && d >= 1);
  const std::int64_t span = (k - 1) * d + 1;
  return {n >= span ? (n - span) / s + 1 : 0, 0, 0};
}

AxisWindow window_same(std::int64_t n, std::int64_t k, std::int64_t s, std::int64_t d) {
  assert(n >= 0 && k >= 1 && s >= 1 && d >= 1);
  const std::int64_t out = (n + s - 1) / s;
  const std::int64_t total = out > 0 ? std::max<std::int64_t>((out - 1) * s + (k - 1) * d + 1 - n, 0) : 0;
  return {out, total / 2, total - total / 2};
}

// ---------------------------------------------------------------- max pooling

template <typename T>
void max_pool2d_forward(const Pool2d& p, const T* x, T* y) {
  assert(valid_pool(p));
  const Strides sx = strides_of(p.input);
  for_each_window(p, [&](std::int64_t n, std::int64_t c, Span rows, Span cols, std::int64_t out) {
    y[out] = max_or_minus_inf(x, first_max(x, sx, n, c, rows, cols));
  });
}

template <typename T>
void max_pool2d_backward(const Pool2d& p, const T* x, const T* dy, T* dx) {
  assert(valid_pool(p));
  const Strides sx = strides_of(p.input);
  std::fill(dx, dx + p.input.numel(), T(0));
  for_each_window(p, [&](std::int64_t n, std::int64_t c, Span rows, Span cols, std::int64_t out) {
    const std::int64_t arg = first_max(x, sx, n, c, rows, cols);
    if (arg >= 0) dx[arg] += dy[out];
  });
}

// ---------------------------------------------------------------- average pooling

template <typename T>
void avg_pool2d_forward(const Pool2d& p, const T* x, T* y) {
  assert(valid_pool(p));
  const Strides sx = strides_of(p.input);
  for_each_window(p, [&](std::int64_t n, std::int64_t c, Span rows, Span cols, std::int64_t out) {
    const double sum = window_sum(x, sx, n, c, rows, cols);
    const std::int64_t count = (rows.end - rows.begin) * (cols.end - cols.begin);
    y[out] = count > 0 ? static_cast<T>(sum / static_cast<double>(count)) : T(0);
  });
}

template <typename T>
void avg_pool2d_backward(const Pool2d& p, const T* dy, T* dx) {
  assert(valid_pool(p));
  const Strides sx = strides_of(p.input);
  std::fill(dx, dx + p.input.numel(), T(0));
  // Scattered: each window adds its share to its cells (overlapping windows sum in T).
  for_each_window(p, [&](std::int64_t n, std::int64_t c, Span rows, Span cols, std::int64_t out) {
    const std::int64_t count = (rows.end - rows.begin) * (cols.end - cols.begin);
    if (count == 0) return;
    const auto share = static_cast<T>(static_cast<double>(dy[out]) / static_cast<double>(count));
    for (std::int64_t h = rows.begin; h < rows.end; ++h)
      for (std::int64_t w = cols.begin; w < cols.end; ++w) dx[offset(sx, n, h, w, c)] += share;
  });
}

// ---------------------------------------------------------------- global pooling

template <typename T>
void global_avg_pool2d_forward(const ImageShape& s, const T* x, T* y) {
  const Strides sx = strides_of(s);
  const double count = static_cast<double>(s.H * s.W);
  for (std::int64_t n = 0; n < s.N; ++n)
    for (std::int64_t c = 0; c < s.C; ++c) {
      const double sum = window_sum(x, sx, n, c, {0, s.H}, {0, s.W});
      y[n * s.C + c] = s.H * s.W > 0 ? static_cast<T>(sum / count) : T(0);
    }
}

template <typename T>
void global_avg_pool2d_backward(const ImageShape& s, const T* dy, T* dx) {
  const Strides sx = strides_of(s);
  const double count = static_cast<double>(s.H * s.W);
  for (std::int64_t n = 0; n < s.N; ++n)
    for (std::int64_t c = 0; c < s.C; ++c) {
      const auto share = static_cast<T>(static_cast<double>(dy[n * s.C + c]) / count);
      for (std::int64_t h = 0; h < s.H; ++h)
        for (std::int64_t w = 0; w < s.W; ++w) dx[offset(sx, n, h, w, c)] = share;
    }
}

template <typename T>
void global_max_pool2d_forward(const ImageShape& s, const T* x, T* y) {
  const Strides sx = strides_of(s);
  for (std::int64_t n = 0; n < s.N; ++n)
    for (std::int64_t c = 0; c < s.C; ++c)
      y[n * s.C + c] = max_or_minus_inf(x, first_max(x, sx, n, c, {0, s.H}, {0, s.W}));
}

template <typename T>
void global_max_pool2d_backward(const ImageShape& s, const T* x, const T* dy, T* dx) {
  const Strides sx = strides_of(s);
  std::fill(dx, dx + s.numel(), T(0));
  for (std::int64_t n = 0; n < s.N; ++n)
    for (std::int64_t c = 0; c < s.C; ++c) {
      const std::int64_t arg = first_max(x, sx, n, c, {0, s.H}, {0, s.W});
      if (arg >= 0) dx[arg] = dy[n * s.C + c];
    }
}

// ---------------------------------------------------------------- padding, cropping

// Zero padding and cropping copy whole rows: in NHWC a row of an image is W*C contiguous
// elements (one plane per image), in NCHW W elements (one plane per image and channel).
namespace {
struct RowPlanes {
  std::int64_t planes, unit;  // planes of H rows; elements per pixel within a row
};

RowPlanes row_planes(const ImageShape& s) {
  if (s.layout == SpatialLayout::nhwc) return {s.N, s.C};
  return {s.N * s.C, 1};
}
}  // namespace

template <typename T>
void zero_pad2d(const ImageShape& s, const Margins& m, const T* x, T* y) {
  const auto [planes, unit] = row_planes(s);
  const std::int64_t in_row = s.W * unit, left = m.left * unit, right = m.right * unit;
  const std::int64_t out_row = left + in_row + right, out_h = s.H + m.top + m.bottom;
  for (std::int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * s.H * in_row;
    T* yp = y + p * out_h * out_row;
    std::fill_n(yp, m.top * out_row, T(0));
    for (std::int64_t h = 0; h < s.H; ++h) {
      T* yr = yp + (m.top + h) * out_row;
      std::fill_n(yr, left, T(0));
      std::copy_n(xp + h * in_row, in_row, yr + left);
      std::fill_n(yr + left + in_row, right, T(0));
    }
    std::fill_n(yp + (m.top + s.H) * out_row, m.bottom * out_row, T(0));
  }
}

template <typename T>
void crop2d(const ImageShape& s, const Margins& m, const T* x, T* y) {
  assert(m.top + m.bottom <= s.H && m.left + m.right <= s.W);
  const auto [planes, unit] = row_planes(s);
  const std::int64_t in_row = s.W * unit, out_row = (s.W - m.left - m.right) * unit;
  const std::int64_t out_h = s.H - m.top - m.bottom;
  if (out_h == 0 || out_row == 0) return;  // (an empty result: no pointer past a plane's end)
  for (std::int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * s.H * in_row + m.top * in_row + m.left * unit;
    T* yp = y + p * out_h * out_row;
    for (std::int64_t h = 0; h < out_h; ++h) std::copy_n(xp + h * in_row, out_row, yp + h * out_row);
  }
}

// ---------------------------------------------------------------- upsampling

template <typename T>
void upsample_nearest2d_forward(const ImageShape& s, std::int64_t size_h, std::int64_t size_w, const T* x,
                                T* y) {
  assert(size_h >= 1 && size_w >= 1);
  const ImageShape out = upsampled(s, size_h, size_w);
  const Strides sx = strides_of(s), sy = strides_of(out);
  for_each_pixel(out, [&](std::int64_t n, std::int64_t h, std::int64_t w, std::int64_t c) {
    y[offset(sy, n, h, w, c)] = x[offset(sx, n, h / size_h, w / size_w, c)];
  });
}

template <typename T>
void upsample_nearest2d_backward(const ImageShape& s, std::int64_t size_h, std::int64_t size_w, const T* dy,
                                 T* dx) {
  assert(size_h >= 1 && size_w >= 1);
  const ImageShape out = upsampled(s, size_h, size_w);
  const Strides sx = strides_of(s), sy = strides_of(out);
  // Each input pixel gathers the size_h x size_w block of dy it was copied to.
  for_each_pixel(s, [&](std::int64_t n, std::int64_t h, std::int64_t w, std::int64_t c) {
    const double sum =
        window_sum(dy, sy, n, c, {h * size_h, (h + 1) * size_h}, {w * size_w, (w + 1) * size_w});
    dx[offset(sx, n, h, w, c)] = static_cast<T>(sum);
  });
}

namespace {

// TensorFlow's half-pixel source position of output index o (compute_interpolation_weights).
struct Lerp {
  std::int64_t lower, upper;
  float lerp;
};

Lerp half_pixel(std::int64_t o, std::int64_t in_size, std::int64_t out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const float src = (static_cast<float>(o) + 0.5f) * scale - 0.5f;
  const float src_floor = std::floor(src);
  return {std::max<std::int64_t>(static_cast<std::int64_t>(src_floor), 0),
          std::min<std::int64_t>(static_cast<std::int64_t>(std::ceil(src)), in_size - 1), src - src_floor};
}

}  // namespace

template <typename T>
void upsample_bilinear2d_forward(const ImageShape& s, std::int64_t size_h, std::int64_t size_w, const T* x,
                                 T* y) {
  assert(size_h >= 1 && size_w >= 1);
  const ImageShape out = upsampled(s, size_h, size_w);
  const Strides sx = strides_of(s), sy = strides_of(out);
  for (std::int64_t n = 0; n < out.N; ++n)
    for (std::int64_t h = 0; h < out.H; ++h) {
      const Lerp ly = half_pixel(h, s.H, out.H);
      for (std::int64_t w = 0; w < out.W; ++w) {
        const Lerp lx = half_pixel(w, s.W, out.W);
        for (std::int64_t c = 0; c < out.C; ++c) {
          const auto at = [&](std::int64_t hi, std::int64_t wi) {
            return static_cast<double>(x[offset(sx, n, hi, wi, c)]);
          };
          const double top =
              at(ly.lower, lx.lower) + (at(ly.lower, lx.upper) - at(ly.lower, lx.lower)) * lx.lerp;
          const double bottom =
              at(ly.upper, lx.lower) + (at(ly.upper, lx.upper) - at(ly.upper, lx.lower)) * lx.lerp;
          y[offset(sy, n, h, w, c)] = static_cast<T>(top + (bottom - top) * ly.lerp);
        }
      }
    }
}

template <typename T>
void upsample_bilinear2d_backward(const ImageShape& s, std::int64_t size_h, std::int64_t size_w, const T* dy,
                                  T* dx) {
  assert(size_h >= 1 && size_w >= 1);
  const ImageShape out = upsampled(s, size_h, size_w);
  const Strides sx = strides_of(s), sy = strides_of(out);
  std::fill(dx, dx + s.numel(), T(0));
  for (std::int64_t n = 0; n < out.N; ++n)
    for (std::int64_t h = 0; h < out.H; ++h) {
      const Lerp ly = half_pixel(h, s.H, out.H);
      for (std::int64_t w = 0; w < out.W; ++w) {
        const Lerp lx = half_pixel(w, s.W, out.W);
        for (std::int64_t c = 0; c < out.C; ++c) {
          const double g = static_cast<double>(dy[offset(sy, n, h, w, c)]);
          const double yl = ly.lerp, xl = lx.lerp;
          dx[offset(sx, n, ly.lower, lx.lower, c)] += static_cast<T>(g * (1 - yl) * (1 - xl));
          dx[offset(sx, n, ly.lower, lx.upper, c)] += static_cast<T>(g * (1 - yl) * xl);
          dx[offset(sx, n, ly.upper, lx.lower, c)] += static_cast<T>(g * yl * (1 - xl));
          dx[offset(sx, n, ly.upper, lx.upper, c)] += static_cast<T>(g * yl * xl);
        }
      }
    }
}

#define BNORM_POOLING_INSTANTIATE(T)                                                                         \
  template void max_pool2d_forward<T>(const Pool2d&, const T*, T*);                                          \
  template void max_pool2d_backward<T>(const Pool2d&, const T*, const T*, T*);                               \
  template void avg_pool2d_forward<T>(const Pool2d&, const T*, T*);                                          \
  template void avg_pool2d_backward<T>(const Pool2d&, const T*, T*);                                         \
  template void global_avg_pool2d_forward<T>(const ImageShape&, const T*, T*);                               \
  template void global_avg_pool2d_backward<T>(const ImageShape&, const T*, T*);                              \
  template void global_max_pool2d_forward<T>(const ImageShape&, const T*, T*);                               \
  template void global_max_pool2d_backward<T>(const ImageShape&, const T*, const T*, T*);                    \
  template void zero_pad2d<T>(const ImageShape&, const Margins&, const T*, T*);                              \
  template void crop2d<T>(const ImageShape&, const Margins&, const T*, T*);                                  \
  template void upsample_nearest2d_forward<T>(const ImageShape&, std::int64_t, std::int64_t, const T*, T*);  \
  template void upsample_nearest2d_backward<T>(const ImageShape&, std::int64_t, std::int64_t, const T*, T*); \
  template void upsample_bilinear2d_forward<T>(const ImageShape&, std::int64_t, std::int64_t, const T*, T*); \
  template void upsample_bilinear2d_backward<T>(const ImageShape&, std::int64_t, std::int64_t, const T*, T*);

BNORM_POOLING_INSTANTIATE(float)
BNORM_POOLING_INSTANTIATE(double)
#undef BNORM_POOLING_INSTANTIATE

}  // namespace bnorm::kernels
