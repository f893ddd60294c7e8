// Dense (fully connected) kernels: the OpenBLAS fast path and the permanent reference.
// Contract, formulas and assigned-vs-accumulated outputs: bnorm/kernels/dense.hpp.
#include "bnorm/kernels/dense.hpp"

#include <cblas.h>

#include <cassert>
#include <climits>
#include <cstdint>
#include <vector>

namespace bnorm::kernels {
namespace {

bool fits_blas_int(std::int64_t n) {
  return n <= static_cast<std::int64_t>(INT_MAX);
}

blasint to_blas(std::int64_t n) {
  return static_cast<blasint>(n);
}

}  // namespace

const char* blas_kernel_family() {
  return openblas_get_corename();
}

void dense_forward(const float* x, const float* w, const float* b, std::int64_t N, std::int64_t K,
                   std::int64_t M, float* y) {
  assert(N >= 0 && K >= 0 && M >= 0);
  if (!fits_blas_int(N) || !fits_blas_int(K) || !fits_blas_int(M)) {
    reference::dense_forward(x, w, b, N, K, M, y);
    return;
  }
  if (N == 0 || M == 0) return;

  // Scalar math: y[n, m] = b[m] + sum_k x[n, k] * w[k, m].
  // Start y at the bias (or 0) and let the GEMM add x @ w to it (beta = 1). BLAS forbids
  // a leading dimension of 0, so K == 0 stops at the bias.
  for (std::int64_t n = 0; n < N; ++n) {
    float* y_row = y + n * M;
    if (b != nullptr) {
      for (std::int64_t m = 0; m < M; ++m) y_row[m] = b[m];
    } else {
      for (std::int64_t m = 0; m < M; ++m) y_row[m] = 0.0f;
    }
  }
  if (K == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, to_blas(N), to_blas(M), to_blas(K), 1.0f, x,
              to_blas(K), w, to_blas(M), 1.0f, y, to_blas(M));
}

void dense_backward(const float* dy, const float* x, const float* w, std::int64_t N, std::int64_t K,
                    std::int64_t M, float* dx, float* dw, float* db) {
  assert(N >= 0 && K >= 0 && M >= 0);
  if (!fits_blas_int(N) || !fits_blas_int(K) || !fits_blas_int(M)) {
    reference::dense_backward(dy, x, w, N, K, M, dx, dw, db);
    return;
  }

  // dx = dy @ w^T, assigned: dx[n, k] = sum_m dy[n, m] * w[k, m]. With M == 0 the sum is
  // empty (and BLAS would reject the leading dimension 0), so write the zeros directly.
  if (dx != nullptr && N > 0 && K > 0) {
    if (M == 0) {
      for (std::int64_t i = 0; i < N * K; ++i) dx[i] = 0.0f;
    } else {
      // beta = 0: OpenBLAS writes C without reading it, so junk (NaN) in dx is harmless.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, to_blas(N), to_blas(K), to_blas(M), 1.0f, dy,
                  to_blas(M), w, to_blas(M), 0.0f, dx, to_blas(K));
    }
  }

  // dw += x^T @ dy, accumulated: dw[k, m] += sum_n x[n, k] * dy[n, m] (beta = 1).
  if (dw != nullptr && N > 0 && K > 0 && M > 0) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, to_blas(K), to_blas(M), to_blas(N), 1.0f, x,
                to_blas(K), dy, to_blas(M), 1.0f, dw, to_blas(M));
  }

  // db[m] += sum_n dy[n, m], column sums in double (row by row, so the inner loop is
  // contiguous), rounded once and added.
  if (db != nullptr && N > 0 && M > 0) {
    std::vector<double> sum(static_cast<std::size_t>(M), 0.0);
    for (std::int64_t n = 0; n < N; ++n) {
      const float* dy_row = dy + n * M;
      for (std::int64_t m = 0; m < M; ++m) sum[static_cast<std::size_t>(m)] += static_cast<double>(dy_row[m]);
    }
    for (std::int64_t m = 0; m < M; ++m)
      db[m] = static_cast<float>(static_cast<double>(db[m]) + sum[static_cast<std::size_t>(m)]);
  }
}

namespace reference {

template <typename T>
void dense_forward(const T* x, const T* w, const T* b, std::int64_t N, std::int64_t K, std::int64_t M, T* y) {
  assert(N >= 0 && K >= 0 && M >= 0);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t m = 0; m < M; ++m) {
      double sum = b != nullptr ? static_cast<double>(b[m]) : 0.0;
      for (std::int64_t k = 0; k < K; ++k)
        sum += static_cast<double>(x[n * K + k]) * static_cast<double>(w[k * M + m]);
      y[n * M + m] = static_cast<T>(sum);
    }
}

template <typename T>
void dense_backward(const T* dy, const T* x, const T* w, std::int64_t N, std::int64_t K, std::int64_t M,
                    T* dx, T* dw, T* db) {
  assert(N >= 0 && K >= 0 && M >= 0);
  if (dx != nullptr) {
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < K; ++k) {
        double sum = 0.0;
        for (std::int64_t m = 0; m < M; ++m)
          sum += static_cast<double>(dy[n * M + m]) * static_cast<double>(w[k * M + m]);
        dx[n * K + k] = static_cast<T>(sum);
      }
  }
  if (dw != nullptr) {
    for (std::int64_t k = 0; k < K; ++k)
      for (std::int64_t m = 0; m < M; ++m) {
        double sum = 0.0;
        for (std::int64_t n = 0; n < N; ++n)
          sum += static_cast<double>(x[n * K + k]) * static_cast<double>(dy[n * M + m]);
        dw[k * M + m] = static_cast<T>(static_cast<double>(dw[k * M + m]) + sum);
      }
  }
  if (db != nullptr) {
    for (std::int64_t m = 0; m < M; ++m) {
      double sum = 0.0;
      for (std::int64_t n = 0; n < N; ++n) sum += static_cast<double>(dy[n * M + m]);
      db[m] = static_cast<T>(static_cast<double>(db[m]) + sum);
    }
  }
}

template void dense_forward<float>(const float*, const float*, const float*, std::int64_t, std::int64_t,
                                   std::int64_t, float*);
template void dense_forward<double>(const double*, const double*, const double*, std::int64_t, std::int64_t,
                                    std::int64_t, double*);
template void dense_backward<float>(const float*, const float*, const float*, std::int64_t, std::int64_t,
                                    std::int64_t, float*, float*, float*);
template void dense_backward<double>(const double*, const double*, const double*, std::int64_t, std::int64_t,
                                     std::int64_t, double*, double*, double*);

}  // namespace reference
}  // namespace bnorm::kernels
