// The permanent reference batch-norm kernels: naive loops, one channel at a time,
// accumulation in double, two-pass variance. Never optimized; every fast kernel is
// tested against these. For T = float the float roundings are placed exactly where the
// fast kernels place them (statistics rounded once from double, the centred affine form
// and the backward coefficients in float), so both agree to about one ulp.
#include "bnorm/kernels/batch_norm_ref.hpp"

#include <cmath>
#include <cstdint>

#include "invstd.hpp"

namespace bnorm::kernels::reference {
namespace {

// Position of x[n, c, s] in the row-major (N, C, S) view.
std::int64_t offset(const BatchNormDims& dims, std::int64_t n, std::int64_t c, std::int64_t s) {
  return (n * dims.C + c) * dims.S + s;
}

template <typename T>
T gamma_at(const T* gamma, std::int64_t c) {
  return gamma != nullptr ? gamma[c] : T(1);
}

template <typename T>
T beta_at(const T* beta, std::int64_t c) {
  return beta != nullptr ? beta[c] : T(0);
}

// Batch statistics of channel c in double: mean = sum x / count, then
// var = sum (x - mean)^2 / count (biased). An empty batch gives 0, 0.
template <typename T>
void channel_moments(const T* x, const BatchNormDims& dims, std::int64_t c, double& mean, double& var) {
  mean = 0.0;
  var = 0.0;
  if (dims.count() == 0) return;
  const double count = static_cast<double>(dims.count());

  double sum = 0.0;
  for (std::int64_t n = 0; n < dims.N; ++n)
    for (std::int64_t s = 0; s < dims.S; ++s) sum += static_cast<double>(x[offset(dims, n, c, s)]);
  mean = sum / count;

  double squares = 0.0;
  for (std::int64_t n = 0; n < dims.N; ++n)
    for (std::int64_t s = 0; s < dims.S; ++s) {
      const double deviation = static_cast<double>(x[offset(dims, n, c, s)]) - mean;
      squares += deviation * deviation;
    }
  var = squares / count;
}

// The centred coefficients of channel c: y = (x - center) * alpha + shift with
//   center = mean rounded to T,  alpha = invstd * gamma  (in T),
//   shift = beta - (mean - center) * alpha  (in double, rounded once to T; beta itself
//           when the mean is exactly a T).
// x - center is exact for x near the mean, so the output keeps its accuracy at any offset
// of the data; the double mean's part below T enters through shift.
template <typename T>
struct Centred {
  T center, alpha, shift;
  Centred(double mean, T invstd, const T* gamma, const T* beta, std::int64_t c)
      : center(static_cast<T>(mean)), alpha(invstd * gamma_at(gamma, c)) {
    const double below = mean - static_cast<double>(center);
    shift = below == 0.0
                ? beta_at(beta, c)
                : static_cast<T>(static_cast<double>(beta_at(beta, c)) - below * static_cast<double>(alpha));
  }
  T operator()(T x) const { return (x - center) * alpha + shift; }
};

// y = (x - center) * alpha + shift over channel c (Centred, from the mean in double).
// With `relu`, y = relu((x - center) * alpha + shift), relu(v) = (v < 0 ? 0 : v).
template <typename T>
void normalize_channel(const T* x, const BatchNormDims& dims, std::int64_t c, double mean, T invstd,
                       const T* gamma, const T* beta, T* y, bool relu = false) {
  const Centred<T> f(mean, invstd, gamma, beta, c);
  for (std::int64_t n = 0; n < dims.N; ++n)
    for (std::int64_t s = 0; s < dims.S; ++s) {
      const std::int64_t i = offset(dims, n, c, s);
      const T v = f(x[i]);
      y[i] = relu && v < T(0) ? T(0) : v;
    }
}

// The ReLU's gradient in one channel: dy where the forward's output was positive, else
// 0. Known from the forward output y (y > 0), or recomputed from x with the channel's
// centred coefficients of the given mean ((x - mean) * alpha + beta > 0: Centred of a
// mean in T, the forward's own expression when its double mean is that T); with neither
// (no ReLU), dy.
template <typename T>
struct ReluGate {
  const T* y = nullptr;
  bool from_x = false;
  T center = T(0), alpha = T(0), shift = T(0);
  T operator()(const T* dy, const T* x, std::int64_t i) const {
    if (y != nullptr) return y[i] > T(0) ? dy[i] : T(0);
    if (from_x) return (x[i] - center) * alpha + shift > T(0) ? dy[i] : T(0);
    return dy[i];
  }
};

// sum g and sum g * (x - mean) over channel c, in double, with g = gate(dy, x).
template <typename T>
void gradient_sums(const T* dy, const T* x, const BatchNormDims& dims, std::int64_t c, T mean, double& sum_dy,
                   double& dotp, const ReluGate<T>& gate = {}) {
  sum_dy = 0.0;
  dotp = 0.0;
  for (std::int64_t n = 0; n < dims.N; ++n)
    for (std::int64_t s = 0; s < dims.S; ++s) {
      const std::int64_t i = offset(dims, n, c, s);
      const double g = static_cast<double>(gate(dy, x, i));
      sum_dy += g;
      dotp += g * (static_cast<double>(x[i]) - static_cast<double>(mean));
    }
}

// backward_training with the ReLU's gradient g in place of dy: the mask from y (non-null),
// else recomputed from x with beta when from_x, else none (plain backward).
template <typename T>
void backward_training_masked(const T* dy, const T* x, const T* y, bool from_x, const T* beta,
                              const BatchNormDims& dims, const T* mean, const T* invstd, const T* gamma,
                              T* dx, T* dgamma, T* dbeta) {
  for (std::int64_t c = 0; c < dims.C; ++c) {
    ReluGate<T> gate;
    gate.y = y;
    gate.from_x = from_x;
    if (from_x) {  // normalize_channel's coefficients, for the given mean
      const Centred<T> f(static_cast<double>(mean[c]), invstd[c], gamma, beta, c);
      gate.center = f.center;
      gate.alpha = f.alpha;
      gate.shift = f.shift;
    }
    double sum_dy = 0.0, dotp = 0.0;
    gradient_sums(dy, x, dims, c, mean[c], sum_dy, dotp, gate);
    const double inv = static_cast<double>(invstd[c]);
    if (dgamma != nullptr) dgamma[c] = static_cast<T>(dotp * inv);
    if (dbeta != nullptr) dbeta[c] = static_cast<T>(sum_dy);
    if (dx == nullptr || dims.count() == 0) continue;

    // dx = (g - sum_g/count - (x - mean) * dotp*invstd^2/count) * invstd * gamma
    const double count = static_cast<double>(dims.count());
    const T grad_mean = static_cast<T>(sum_dy / count);
    const T k = static_cast<T>(dotp * inv * inv / count);
    const T scale = invstd[c] * gamma_at(gamma, c);
    for (std::int64_t n = 0; n < dims.N; ++n)
      for (std::int64_t s = 0; s < dims.S; ++s) {
        const std::int64_t i = offset(dims, n, c, s);
        dx[i] = (gate(dy, x, i) - grad_mean - (x[i] - mean[c]) * k) * scale;
      }
  }
}

template <typename T>
void forward_training_impl(const T* x, const BatchNormDims& dims, const T* gamma, const T* beta, T epsilon,
                           T* y, T* mean, T* var, T* invstd, double* mean_d, double* var_d, bool relu) {
  for (std::int64_t c = 0; c < dims.C; ++c) {
    double channel_mean = 0.0, channel_var = 0.0;
    channel_moments(x, dims, c, channel_mean, channel_var);
    const T m = static_cast<T>(channel_mean);
    const T inv = invstd_of(channel_var, epsilon);
    mean[c] = m;
    var[c] = static_cast<T>(channel_var);
    invstd[c] = inv;
    if (mean_d != nullptr) mean_d[c] = channel_mean;
    if (var_d != nullptr) var_d[c] = channel_var;
    // Channel c's elements were all read above, so y may alias x.
    normalize_channel(x, dims, c, channel_mean, inv, gamma, beta, y, relu);
  }
}

}  // namespace

template <typename T>
void moments(const T* x, const BatchNormDims& dims, T* mean, T* var, double* mean_d, double* var_d) {
  for (std::int64_t c = 0; c < dims.C; ++c) {
    double channel_mean = 0.0, channel_var = 0.0;
    channel_moments(x, dims, c, channel_mean, channel_var);
    mean[c] = static_cast<T>(channel_mean);
    var[c] = static_cast<T>(channel_var);
    if (mean_d != nullptr) mean_d[c] = channel_mean;
    if (var_d != nullptr) var_d[c] = channel_var;
  }
}

template <typename T>
void forward_training(const T* x, const BatchNormDims& dims, const T* gamma, const T* beta, T epsilon, T* y,
                      T* mean, T* var, T* invstd, double* mean_d, double* var_d) {
  forward_training_impl(x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d, var_d, false);
}

template <typename T>
void forward_training_relu(const T* x, const BatchNormDims& dims, const T* gamma, const T* beta, T epsilon,
                           T* y, T* mean, T* var, T* invstd, double* mean_d, double* var_d) {
  forward_training_impl(x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d, var_d, true);
}

template <typename T>
void forward_inference(const T* x, const BatchNormDims& dims, const T* mean, const T* var, const T* gamma,
                       const T* beta, T epsilon, T* y) {
  for (std::int64_t c = 0; c < dims.C; ++c) {
    const T inv = invstd_of(static_cast<double>(var[c]), epsilon);
    normalize_channel(x, dims, c, static_cast<double>(mean[c]), inv, gamma, beta, y);
  }
}

template <typename T>
void backward_training(const T* dy, const T* x, const BatchNormDims& dims, const T* mean, const T* invstd,
                       const T* gamma, T* dx, T* dgamma, T* dbeta) {
  backward_training_masked(dy, x, static_cast<const T*>(nullptr), false, static_cast<const T*>(nullptr), dims,
                           mean, invstd, gamma, dx, dgamma, dbeta);
}

template <typename T>
void backward_training_relu(const T* dy, const T* x, const T* y, const BatchNormDims& dims, const T* mean,
                            const T* invstd, const T* gamma, T* dx, T* dgamma, T* dbeta) {
  backward_training_masked(dy, x, y, false, static_cast<const T*>(nullptr), dims, mean, invstd, gamma, dx,
                           dgamma, dbeta);
}

template <typename T>
void backward_training_relu(const T* dy, const T* x, const BatchNormDims& dims, const T* mean,
                            const T* invstd, const T* gamma, const T* beta, T* dx, T* dgamma, T* dbeta) {
  backward_training_masked(dy, x, static_cast<const T*>(nullptr), true, beta, dims, mean, invstd, gamma, dx,
                           dgamma, dbeta);
}

template <typename T>
void backward_inference(const T* dy, const T* x, const BatchNormDims& dims, const T* mean, const T* var,
                        const T* gamma, T epsilon, T* dx, T* dgamma, T* dbeta) {
  for (std::int64_t c = 0; c < dims.C; ++c) {
    const T inv = invstd_of(static_cast<double>(var[c]), epsilon);
    if (dgamma != nullptr || dbeta != nullptr) {
      double sum_dy = 0.0, dotp = 0.0;
      gradient_sums(dy, x, dims, c, mean[c], sum_dy, dotp);
      if (dgamma != nullptr) dgamma[c] = static_cast<T>(static_cast<double>(inv) * dotp);
      if (dbeta != nullptr) dbeta[c] = static_cast<T>(sum_dy);
    }
    if (dx == nullptr) continue;

    // dx = dy * gamma * invstd
    const T scale = inv * gamma_at(gamma, c);
    for (std::int64_t n = 0; n < dims.N; ++n)
      for (std::int64_t s = 0; s < dims.S; ++s) {
        const std::int64_t i = offset(dims, n, c, s);
        dx[i] = dy[i] * scale;
      }
  }
}

template <typename T>
void backward_training_dx(const T* dy, const T* x, const BatchNormDims& dims, const T* mean, const T* invstd,
                          const T* gamma, const double* sum_dy, const double* sum_dy_xhat, std::int64_t count,
                          T* dx) {
  if (dims.count() == 0 || count <= 0) return;
  for (std::int64_t c = 0; c < dims.C; ++c) {
    // dx = (dy - sum_dy/count - (x - mean) * sum_dy_xhat*invstd/count) * invstd * gamma
    // (backward_training_masked's expression, with the sums given)
    const double inv = static_cast<double>(invstd[c]);
    const auto n_all = static_cast<double>(count);
    const T grad_mean = static_cast<T>(sum_dy[c] / n_all);
    const T k = static_cast<T>(sum_dy_xhat[c] * inv / n_all);
    const T scale = invstd[c] * gamma_at(gamma, c);
    for (std::int64_t n = 0; n < dims.N; ++n)
      for (std::int64_t s = 0; s < dims.S; ++s) {
        const std::int64_t i = offset(dims, n, c, s);
        dx[i] = (dy[i] - grad_mean - (x[i] - mean[c]) * k) * scale;
      }
  }
}

#define BNORM_INSTANTIATE_REFERENCE(T)                                                                       \
  template void moments<T>(const T*, const BatchNormDims&, T*, T*, double*, double*);                        \
  template void forward_training<T>(const T*, const BatchNormDims&, const T*, const T*, T, T*, T*, T*, T*,   \
                                    double*, double*);                                                       \
  template void forward_inference<T>(const T*, const BatchNormDims&, const T*, const T*, const T*, const T*, \
                                     T, T*);                                                                 \
  template void backward_training<T>(const T*, const T*, const BatchNormDims&, const T*, const T*, const T*, \
                                     T*, T*, T*);                                                            \
  template void backward_inference<T>(const T*, const T*, const BatchNormDims&, const T*, const T*,          \
                                      const T*, T, T*, T*, T*);                                              \
  template void forward_training_relu<T>(const T*, const BatchNormDims&, const T*, const T*, T, T*, T*, T*,  \
                                         T*, double*, double*);                                              \
  template void backward_training_relu<T>(const T*, const T*, const T*, const BatchNormDims&, const T*,      \
                                          const T*, const T*, T*, T*, T*);                                   \
  template void backward_training_relu<T>(const T*, const T*, const BatchNormDims&, const T*, const T*,      \
                                          const T*, const T*, T*, T*, T*);                                   \
  template void backward_training_dx<T>(const T*, const T*, const BatchNormDims&, const T*, const T*,        \
                                        const T*, const double*, const double*, std::int64_t, T*);

BNORM_INSTANTIATE_REFERENCE(float)
BNORM_INSTANTIATE_REFERENCE(double)

#undef BNORM_INSTANTIATE_REFERENCE

}  // namespace bnorm::kernels::reference
