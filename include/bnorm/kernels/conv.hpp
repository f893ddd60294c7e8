// bnorm/kernels/conv.hpp: stateless 2-D convolution kernels (float32, CPU), the
// arithmetic of Keras Conv1D / Conv2D / DepthwiseConv2D / SeparableConv2D.
//
// Description. A Conv2dDesc holds every size of one call; the kernels keep nothing
// between calls (the oneDNN path caches compiled primitives per description, which is
// not state the results depend on). Conv1D is H == 1 (kh == 1, stride_h == 1).
//
// Layout. Row-major throughout.
//   x       (N, H, W, Cin)          nhwc (Keras channels_last)    or (N, Cin, H, W) nchw
//   y, dy   (N, OH, OW, Cout)       nhwc                          or (N, Cout, OH, OW) nchw
//   kernel  (kh, kw, Cin/groups, Cout)  the Keras layout (TF "HWIO"), for both data layouts;
//           element [i, j, c, f] at ((i*kw + j)*Cin_g + c)*Cout + f. PyTorch's OIHW is
//           the transpose (3, 2, 0, 1).
//   bias    (Cout)
//
// Groups. Output channel f belongs to group g = f / (Cout/groups) and reads the input
// channels [g*Cin_g, (g+1)*Cin_g), Cin_g = Cin/groups.
//
// Depthwise. Keras DepthwiseConv2D with depth_multiplier dm is groups == Cin,
// Cout = Cin*dm, and its kernel (kh, kw, Cin, dm) IS the grouped kernel
// (kh, kw, 1, Cin*dm) without moving a byte: element [i, j, c, m] sits at
// ((i*kw + j)*Cin + c)*dm + m, which is the grouped offset ((i*kw + j)*1 + 0)*Cout + f of
// output channel f = c*dm + m, and f belongs to group f / dm = c, reading input channel
// c. So Keras's output channel order c*dm + m comes for free (depthwise_kernel_shape()
// names the reshape; tests/kernels/conv_kernels_test.cpp checks it against direct
// depthwise loops).
//
// Arithmetic (a cross-correlation, the kernel is not flipped), for every n, oh, ow, f:
//   y[n, oh, ow, f] = bias[f] + sum_{i<kh, j<kw, c<Cin_g}
//       x[n, oh*sh + i*dh - pad_top, ow*sw + j*dw - pad_left, g*Cin_g + c] * kernel[i, j, c, f]
//   (x outside the image is 0), with
//   OH = (H + pad_top + pad_bottom - ((kh-1)*dh + 1)) / sh + 1   (floor), likewise OW.
// Backward is the plain adjoint (CNN.md section 9):
//   dx[n, h, w, g*Cin_g + c] = sum over (oh, ow, i, j, f in group g) with
//                              h = oh*sh + i*dh - pad_top, w = ow*sw + j*dw - pad_left
//                              of dy[n, oh, ow, f] * kernel[i, j, c, f]
//   dkernel[i, j, c, f]     += sum_{n, oh, ow} x[n, oh*sh + i*dh - pad_top, ...] * dy[n, oh, ow, f]
//   dbias[f]                += sum_{n, oh, ow} dy[n, oh, ow, f]
//
// ASSIGNED vs ACCUMULATED (as the dense kernels). y and dx are ASSIGNED (overwritten;
// prior contents, even NaN, are never read). dkernel and dbias are ACCUMULATED into
// (+=): the caller zeroes them once per step. Nullable: bias == null means no bias;
// dkernel or dbias == null is skipped. N == 0 is well defined: nothing is written to y or
// dx (they are empty) and dkernel/dbias are unchanged; oneDNN is not called.
//
// Preconditions (check with conv2d_check at the API boundary; asserted in debug builds):
// N >= 0; H, W, Cin, Cout, kh, kw, strides, dilations, groups >= 1; pads >= 0; Cin and
// Cout divisible by groups; OH, OW >= 1 (the dilated kernel fits the padded input);
// buffers of the sizes in the shape comments; outputs do not alias inputs.
//
// Implementations, an ordered list (conv2d_explain says which one runs and why):
//   1. onednn: oneDNN (libdnnl) convolution_forward / _backward_data / _backward_weights,
//      f32, with x/y in the caller's layout (nhwc or nchw) and the kernel reordered from
//      the Keras layout to the format oneDNN picks. Primitives are cached per description
//      (thread-safe; at most 256 entries, then the cache starts over); one global CPU
//      engine, one stream per calling thread, scratchpads per call, so concurrent calls
//      are safe. Threads: oneDNN's OpenMP runtime (OMP_NUM_THREADS). oneDNN picks its
//      kernels per CPU (AVX2, AVX-512, ...), so results match the reference to float
//      rounding (relative about sqrt(kh*kw*Cin_g) ulp), never bitwise across machines.
//      dkernel/dbias are computed into a temporary, then added.
//   2. reference: the loops below, chosen when oneDNN cannot create the primitive (the
//      reason is kept) or when forced with ConvImpl::reference.
// BNORM_VERBOSE=1 in the environment prints the choice to stderr at each new description.
#pragma once

#include <cstdint>
#include <string>

namespace bnorm::kernels {

enum class ConvLayout { nhwc, nchw };

struct Conv2dDesc {
  std::int64_t N = 0;     // batch
  std::int64_t H = 1;     // input height (1 for Conv1D)
  std::int64_t W = 1;     // input width (the steps of Conv1D)
  std::int64_t Cin = 1;   // input channels
  std::int64_t Cout = 1;  // output channels (Keras filters; depthwise: Cin * depth_multiplier)
  std::int64_t kh = 1, kw = 1;                  // kernel size
  std::int64_t stride_h = 1, stride_w = 1;      // strides
  std::int64_t dilation_h = 1, dilation_w = 1;  // Keras dilation_rate (1: none; oneDNN's is this - 1)
  std::int64_t pad_top = 0, pad_left = 0;       // zeros before
  std::int64_t pad_bottom = 0, pad_right = 0;   // zeros after
  std::int64_t groups = 1;
  ConvLayout layout = ConvLayout::nhwc;

  // OH, OW by the formula above; 0 when the dilated kernel does not fit the padded input.
  std::int64_t out_h() const noexcept;
  std::int64_t out_w() const noexcept;
  std::int64_t cin_per_group() const noexcept { return Cin / groups; }
  std::int64_t x_size() const noexcept { return N * H * W * Cin; }
  std::int64_t y_size() const noexcept { return N * out_h() * out_w() * Cout; }
  std::int64_t kernel_size() const noexcept { return kh * kw * cin_per_group() * Cout; }

  friend bool operator==(const Conv2dDesc&, const Conv2dDesc&) = default;
};

// Throws ArgumentError (a size, stride, dilation, pad or groups out of its domain,
// Cin or Cout not divisible by groups) or ShapeError (the dilated kernel larger than the
// padded input: OH or OW < 1), naming the field and `where` ("Conv2D 'c1'").
void conv2d_check(const Conv2dDesc& desc, const std::string& where = "conv2d");

// TensorFlow / Keras padding="same" along one axis (CNN.md section 1.5):
//   out = ceil(in / stride), total = max((out-1)*stride + (k-1)*dilation + 1 - in, 0),
//   before = total / 2 (floor), after = total - before (the odd pixel goes after).
struct SamePadding {
  std::int64_t before = 0, after = 0, out = 0;
};
SamePadding same_padding(std::int64_t in, std::int64_t kernel, std::int64_t stride, std::int64_t dilation);
// padding="valid": floor((in - (k-1)*dilation - 1) / stride) + 1, or 0 when the dilated
// kernel is larger than the input.
std::int64_t valid_output_size(std::int64_t in, std::int64_t kernel, std::int64_t stride, std::int64_t dilation);

// The grouped-kernel shape that a Keras depthwise kernel (kh, kw, Cin, dm) is, as a
// reshape of the same memory: (kh, kw, 1, Cin*dm). (See "Depthwise" above.)
struct KernelShape {
  std::int64_t kh, kw, cin_per_group, cout;
};
constexpr KernelShape depthwise_kernel_shape(std::int64_t kh, std::int64_t kw, std::int64_t Cin,
                                             std::int64_t depth_multiplier) {
  return {kh, kw, 1, Cin * depth_multiplier};
}

enum class ConvImpl { automatic, onednn, reference };
enum class ConvOp { forward, backward_data, backward_weights };

// The implementation `automatic` runs for this description and operation, and why the
// ones before it were rejected: "onednn (jit:avx2)", "reference (oneDNN: could not
// create a primitive ...)". Creates (and caches) the primitive. Expects a checked desc.
std::string conv2d_explain(const Conv2dDesc& desc, ConvOp op, bool has_bias = true);

// y = conv(x, kernel) + bias.
void conv2d_forward(const Conv2dDesc& desc,
                    const float* x,       // (N, H, W, Cin) or (N, Cin, H, W)
                    const float* kernel,  // (kh, kw, Cin/groups, Cout)
                    const float* bias,    // (Cout) or null (no bias)
                    float* y,             // (N, OH, OW, Cout) or (N, Cout, OH, OW), ASSIGNED
                    ConvImpl impl = ConvImpl::automatic);

// dx = dL/dx given dy = dL/dy.
void conv2d_backward_data(const Conv2dDesc& desc,
                          const float* dy,      // (N, OH, OW, Cout) or (N, Cout, OH, OW)
                          const float* kernel,  // (kh, kw, Cin/groups, Cout)
                          float* dx,            // (N, H, W, Cin) or (N, Cin, H, W), ASSIGNED
                          ConvImpl impl = ConvImpl::automatic);

// dkernel += dL/dkernel, dbias += dL/dbias given the forward input x and dy.
void conv2d_backward_weights(const Conv2dDesc& desc,
                             const float* x,   // (N, H, W, Cin) or (N, Cin, H, W)
                             const float* dy,  // (N, OH, OW, Cout) or (N, Cout, OH, OW)
                             float* dkernel,   // (kh, kw, Cin/groups, Cout) ACCUMULATED, or null
                             float* dbias,     // (Cout) ACCUMULATED, or null
                             ConvImpl impl = ConvImpl::automatic);

// The permanent reference: the formulas above as naive loops, every sum accumulated in
// double and rounded once to T. Same contract (assigned y/dx, accumulated dkernel/dbias,
// nulls, N == 0). Instantiated for T = float (the fast path is tested against it) and
// T = double (finite-difference gradient tests). Never optimized.
namespace reference {

template <typename T>
void conv2d_forward(const Conv2dDesc& desc, const T* x, const T* kernel, const T* bias, T* y);
template <typename T>
void conv2d_backward_data(const Conv2dDesc& desc, const T* dy, const T* kernel, T* dx);
template <typename T>
void conv2d_backward_weights(const Conv2dDesc& desc, const T* x, const T* dy, T* dkernel, T* dbias);

}  // namespace reference
}  // namespace bnorm::kernels
