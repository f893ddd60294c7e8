// bnorm/kernels/pooling.hpp: stateless 2-D pooling and spatial kernels (CPU): max and
// average pooling, global pooling, zero padding, cropping, nearest and bilinear
// upsampling, forward and backward, for the Keras layers of ../shared/spec/CNN.md
// section 2 as TensorFlow computes them.
//
// Layout. An image batch is (N, H, W, C) row-major for SpatialLayout::nhwc (Keras
// channels_last) or (N, C, H, W) for SpatialLayout::nchw (channels_first). Outputs keep
// the input's layout.
//
// One implementation per kernel. These loops are memory-bound and simple; each IS the
// readable reference (STYLE rule 3): plain loops, window sums and global sums
// accumulated in double, every output rounded once to T. Instantiated for T = float (the
// layers) and T = double (finite-difference tests). There is no separate fast path.
//
// Outputs are ASSIGNED (every element written, prior contents never read). Inputs and
// outputs must not overlap. Sizes >= 0 and the geometry consistent (asserted in debug
// builds; the layers validate user input and throw). A zero-sized tensor is a no-op.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

enum class SpatialLayout { nhwc, nchw };

// An image batch: N images of H x W pixels with C channels, in `layout`.
struct ImageShape {
  std::int64_t N = 0, H = 0, W = 0, C = 0;
  SpatialLayout layout = SpatialLayout::nhwc;
  std::int64_t numel() const { return N * H * W * C; }
};

// One spatial axis of a sliding window (TensorFlow's VALID / SAME, CNN.md section 1.5):
// input size n, window k, stride s, dilation d (>= 1):
//   valid: out = floor((n - (k-1) d - 1) / s) + 1 (0 when the window is larger than n),
//          no padding
//   same:  out = ceil(n / s); total = max((out - 1) s + (k-1) d + 1 - n, 0);
//          pad_before = floor(total / 2), pad_after = total - pad_before (the odd extra
//          cell goes AFTER: bottom / right)
// E.g. n 5, k 2, s 2, same: out 3, before 0, after 1; n 4, k 4, s 1: out 4, before 1, after 2.
struct AxisWindow {
  std::int64_t out = 0, pad_before = 0, pad_after = 0;
};
AxisWindow window_valid(std::int64_t n, std::int64_t k, std::int64_t s, std::int64_t d = 1);
AxisWindow window_same(std::int64_t n, std::int64_t k, std::int64_t s, std::int64_t d = 1);

// A 2-D pooling: output pixel (oh, ow) covers input rows oh*stride_h - pad_top + [0, pool_h)
// and columns ow*stride_w - pad_left + [0, pool_w); cells outside the input are padding.
// out_h, out_w, pad_top and pad_left come from window_valid / window_same. Every window
// holds at least one real cell (true for both rules).
struct Pool2d {
  ImageShape input;
  std::int64_t pool_h = 1, pool_w = 1;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_top = 0, pad_left = 0;
  std::int64_t out_h = 0, out_w = 0;
  ImageShape output() const { return {input.N, out_h, out_w, input.C, input.layout}; }
};

// Max pooling: y = max over the window's real cells (padding never wins: it acts as
// -inf, as TensorFlow). A NaN in a window gives NaN.
//   backward: dx = 0, then for every window dx[argmax] += dy. The argmax is the FIRST
//   maximum in row-major window order (TF's CPU MaxPoolGrad compares with a strict ">":
//   an all-equal 2x2 window sends its gradient to its top-left cell, measured in
//   CNN.md section 2.1), or the first NaN; overlapping windows accumulate.
template <typename T>
void max_pool2d_forward(const Pool2d& p,
                        const T* x,  // p.input
                        T* y);       // p.output() assigned
template <typename T>
void max_pool2d_backward(const Pool2d& p,
                         const T* x,   // p.input: the forward input (the argmax is recomputed)
                         const T* dy,  // p.output()
                         T* dx);       // p.input assigned

// Average pooling: y = (sum of the window's real cells) / (number of real cells), so
// padding="same" divides by the count of REAL cells, not pool_h * pool_w (CNN.md
// section 2.1: AveragePooling2D(2, same) on 5x5 x = 1..25 gives a corner 25, an edge
// 7.5 = (5 + 10) / 2).
//   backward: dx = 0, then each window adds dy / count to each of its real cells
//   (AvgPool(2, same) on 3x3 gives dx = [[.25,.25,.5],[.25,.25,.5],[.5,.5,1]] for dy = 1).
template <typename T>
void avg_pool2d_forward(const Pool2d& p,
                        const T* x,  // p.input
                        T* y);       // p.output() assigned
template <typename T>
void avg_pool2d_backward(const Pool2d& p,
                         const T* dy,  // p.output()
                         T* dx);       // p.input assigned

// Global pooling over H and W: y (N, C), whatever the layout (keepdims is a reshape).
//   average: y[n, c] = mean over (h, w);        backward dx = dy[n, c] / (H W)
//   max:     y[n, c] = max over (h, w), NaN wins; backward dx = dy[n, c] at the first
//            maximum in (h, w) row-major order, 0 elsewhere
template <typename T>
void global_avg_pool2d_forward(const ImageShape& s, const T* x, T* y /* (N, C) assigned */);
template <typename T>
void global_avg_pool2d_backward(const ImageShape& s, const T* dy /* (N, C) */, T* dx /* s, assigned */);
template <typename T>
void global_max_pool2d_forward(const ImageShape& s, const T* x, T* y /* (N, C) assigned */);
template <typename T>
void global_max_pool2d_backward(const ImageShape& s, const T* x /* the forward input */,
                                const T* dy /* (N, C) */, T* dx /* s, assigned */);

// Amounts of padding or cropping per side, >= 0.
struct Margins {
  std::int64_t top = 0, bottom = 0, left = 0, right = 0;
};

// Zero padding: y (N, H + top + bottom, W + left + right, C); y = x inside, 0 outside.
// Cropping: y (N, H - top - bottom, W - left - right, C) = x[top : H - bottom, left : W - right].
// Each is the other's adjoint, so
//   zero_pad2d backward: dx = crop2d(dy) with the same margins (dy shaped as the padded image)
//   crop2d backward:     dx = zero_pad2d(dy) with the same margins
// Requires for crop2d: top + bottom <= H and left + right <= W.
template <typename T>
void zero_pad2d(const ImageShape& s, const Margins& m, const T* x, T* y);
template <typename T>
void crop2d(const ImageShape& s, const Margins& m, const T* x, T* y);

// Nearest upsampling by integer factors (Keras UpSampling2D interpolation "nearest",
// a repeat along H then W): y (N, H size_h, W size_w, C), y[.., h, w, ..] =
// x[.., h / size_h, w / size_w, ..].
//   backward: dx[.., h, w, ..] = sum of dy over the size_h x size_w block it was copied to.
template <typename T>
void upsample_nearest2d_forward(const ImageShape& s, std::int64_t size_h, std::int64_t size_w, const T* x,
                                T* y);
template <typename T>
void upsample_nearest2d_backward(const ImageShape& s, std::int64_t size_h, std::int64_t size_w, const T* dy,
                                 T* dx /* s, assigned */);

// Bilinear upsampling (UpSampling2D interpolation "bilinear": tf.image.resize, half-pixel
// centres, no antialias, no corner alignment), to (N, H size_h, W size_w, C). Per output
// row (and likewise per column), as TensorFlow's ResizeBilinear computes it in float:
//   scale = float(H) / float(H size_h); src = (oh + 0.5f) scale - 0.5f;
//   lower = max(floor(src), 0); upper = min(ceil(src), H - 1); lerp = src - floor(src)
//   top = x[lower, left] + (x[lower, right] - x[lower, left]) xlerp (likewise bottom)
//   y = top + (bottom - top) ylerp
// [[1,2],[3,4]], size 2 -> first row [1, 1.25, 1.75, 2] (CNN.md section 2.2).
//   backward (TF ResizeBilinearGrad): dx = 0, then each output adds
//   dy (1-ylerp)(1-xlerp), dy (1-ylerp) xlerp, dy ylerp (1-xlerp), dy ylerp xlerp to its
//   four source cells.
template <typename T>
void upsample_bilinear2d_forward(const ImageShape& s, std::int64_t size_h, std::int64_t size_w, const T* x,
                                 T* y);
template <typename T>
void upsample_bilinear2d_backward(const ImageShape& s, std::int64_t size_h, std::int64_t size_w, const T* dy,
                                  T* dx /* s, assigned */);

}  // namespace bnorm::kernels
