// Fused CPU kernels of weight normalization, w = g * v / ||v||, for MindSpore's
// ops.Custom(func_type="aot").
//
// The weight arrives in its own shape with a 2-element int64 "meta" tensor [eps, axis]:
// eps as the bits of a float64, axis -1 for the norm of the whole tensor. (An integer
// tensor, because mixed precision casts floating inputs of float16 cells to float16.) The kernels see it as a 3-D view (outer, K, inner)
// with the norm index k: dim 0 is (1, K, inner), the last dim is (outer, K, 1), a middle
// dim is (outer, K, inner), the whole tensor is (1, 1, N). g (and its gradient) holds K
// values in any shape. Taking the shape as is (rather than a reshaped view) keeps reshape
// ops out of the graph.
//
// Each kernel is a reduction then an elementwise pass. For dim 0 with rows that fit in
// cache they run row by row, so memory is read once; otherwise they are two passes. Half
// types are loaded into float and reduced in float; float64 is reduced in double. Very
// large tensors are split across a few short-lived std::threads (no OpenMP runtime: its
// spinning worker threads would compete with MindSpore's own thread pool on small machines;
// "#pragma omp simd" needs only -fopenmp-simd, a compile-time flag).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using bf16_t = uint16_t;  // raw bfloat16 bits

inline float load(const float *p, int64_t i) { return p[i]; }
inline double load(const double *p, int64_t i) { return p[i]; }
inline float load(const _Float16 *p, int64_t i) { return static_cast<float>(p[i]); }
inline float load(const bf16_t *p, int64_t i) {
  uint32_t u = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline void store(float *p, int64_t i, float x) { p[i] = x; }
inline void store(double *p, int64_t i, double x) { p[i] = x; }
inline void store(_Float16 *p, int64_t i, float x) { p[i] = static_cast<_Float16>(x); }
inline void store(bf16_t *p, int64_t i, float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    p[i] = static_cast<bf16_t>((u >> 16) | 0x40u);  // keep NaN a NaN after truncation
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    p[i] = static_cast<bf16_t>(u >> 16);
  }
}

// Round an accumulator-precision value to T and back: the composed path rounds the scale
// g/||v|| to the weight's dtype before multiplying, and so do we, to give the same numbers.
template <typename T, typename A>
inline A round_to(A x) {
  T tmp[1];
  store(tmp, 0, x);
  return load(tmp, 0);
}

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

enum class Dt { f32, f64, f16, bf16, unknown };

Dt parse_dtype(const char *s) {
  if (std::strcmp(s, "float32") == 0 || std::strcmp(s, "float") == 0) return Dt::f32;
  if (std::strcmp(s, "float64") == 0 || std::strcmp(s, "double") == 0) return Dt::f64;
  if (std::strcmp(s, "float16") == 0 || std::strcmp(s, "half") == 0) return Dt::f16;
  if (std::strcmp(s, "bfloat16") == 0) return Dt::bf16;
  return Dt::unknown;
}

// g and its gradient are small (K values): converted through a runtime dtype switch so
// that g may have a different floating dtype than v (e.g. float32 g for a float16 v).
double load_any(const void *p, Dt dt, int64_t i) {
  switch (dt) {
    case Dt::f32: return load(static_cast<const float *>(p), i);
    case Dt::f64: return load(static_cast<const double *>(p), i);
    case Dt::f16: return load(static_cast<const _Float16 *>(p), i);
    case Dt::bf16: return load(static_cast<const bf16_t *>(p), i);
    default: return 0.0;
  }
}

void store_any(void *p, Dt dt, int64_t i, double x) {
  switch (dt) {
    case Dt::f32: store(static_cast<float *>(p), i, static_cast<float>(x)); break;
    case Dt::f64: store(static_cast<double *>(p), i, x); break;
    case Dt::f16: store(static_cast<_Float16 *>(p), i, static_cast<float>(x)); break;
    case Dt::bf16: store(static_cast<bf16_t *>(p), i, static_cast<float>(x)); break;
    default: break;
  }
}

int64_t numel(int nd, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < nd; ++i) n *= shape[i];
  return n;
}

// Below this many elements per thread, starting a thread costs more than it saves. Measured
// on a 2-core machine, a second thread did not pay off even at 16M elements (the loops are
// bound by memory bandwidth) and doubled the time at 262K, so threads are for huge weights
// on machines with more memory channels. MS_WEIGHTNORM_THREADS caps the thread count and
// MS_WEIGHTNORM_THREAD_GRAIN overrides this grain (read on every call: a getenv is cheap
// next to a pass over a weight, and tests can exercise the threaded loops).
constexpr int64_t kGrain = int64_t{1} << 22;

int64_t env_int(const char *name, int64_t fallback) {
  const char *text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  const long long value = std::atoll(text);
  return value > 0 ? static_cast<int64_t>(value) : fallback;
}

int thread_count(int64_t n) {
  static const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t cap = env_int("MS_WEIGHTNORM_THREADS", hw);
  const int64_t grain = env_int("MS_WEIGHTNORM_THREAD_GRAIN", kGrain);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cap, n / grain)));
}

// Run body(t, lo, hi) on nt contiguous parts of [0, n), the last part on this thread.
template <typename F>
void parallel_ranges(int nt, int64_t n, F body) {
  if (nt <= 1) {
    body(0, int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(nt - 1);
  for (int t = 0; t < nt - 1; ++t) {
    pool.emplace_back(body, t, n * t / nt, n * (t + 1) / nt);
  }
  body(nt - 1, n * (nt - 1) / nt, n);
  for (auto &th : pool) th.join();
}

// Sums over [lo, hi) of x*x, and of x*y when kDot. The simd reduction lets the compiler
// keep several partial sums per vector lane (a reordering of the additions, like any
// vectorized or pairwise sum) without -ffast-math for the rest of the file.
template <typename T, typename A, bool kDot>
inline void segment_sums(const T *__restrict__ x, const T *__restrict__ y, int64_t lo, int64_t hi, A *sxx,
                         A *sxy) {
  A rx = 0, ry = 0;
  if (kDot) {
#pragma omp simd reduction(+ : rx, ry)
    for (int64_t i = lo; i < hi; ++i) {
      const A a = load(x, i);
      rx += a * a;
      ry += a * static_cast<A>(load(y, i));
    }
  } else {
#pragma omp simd reduction(+ : rx)
    for (int64_t i = lo; i < hi; ++i) {
      const A a = load(x, i);
      rx += a * a;
    }
  }
  *sxx += rx;
  if (kDot) *sxy += ry;
}

// Rows per block for (outer, K) views: the fewest rows whose K columns fill whole 64-byte
// vectors, unless that block would be large (then K is wide enough to vectorize by itself).
inline int64_t block_rows(int64_t K) {
  int64_t rows = 1;
  while ((rows * K) % 16 != 0 && rows < 16) rows *= 2;
  return rows * K > 8192 ? 1 : rows;
}

// Per-k sums of v*v (and of v*dw when kDot) over the (outer, K, inner) view.
template <typename T, typename A, bool kDot>
void reduce(const T *v, const T *dw, int64_t outer, int64_t K, int64_t inner, A *svv, A *svd) {
  const int64_t n = outer * K * inner;
  const int nt = thread_count(n);
  std::vector<A> part(static_cast<size_t>(nt) * K * 2, A(0));
  if (inner == 1) {
    // Rows of an (outer, K) matrix, taken R rows at a time so that a block of R*K values is
    // a whole number of vectors: each block adds into the same R*K accumulators, a plain
    // vectorizable loop even for a handful of columns (dim=-2 of a Conv1d weight: K = 7).
    const int64_t rows = block_rows(K);
    const int64_t L = rows * K;
    parallel_ranges(nt, outer, [&](int t, int64_t lo, int64_t hi) {
      std::vector<A> acc(static_cast<size_t>(kDot ? 2 * L : L), A(0));
      A *__restrict__ av = acc.data();
      A *__restrict__ ad = av + (kDot ? L : 0);
      int64_t o = lo;
      for (; o + rows <= hi; o += rows) {
        const T *__restrict__ x = v + o * K;
        const T *__restrict__ y = kDot ? dw + o * K : nullptr;
#pragma omp simd
        for (int64_t l = 0; l < L; ++l) {
          const A a = load(x, l);
          av[l] += a * a;
          if (kDot) ad[l] += a * static_cast<A>(load(y, l));
        }
      }
      A *pv = part.data() + static_cast<size_t>(t) * K * 2;
      A *pd = pv + K;
      for (int64_t l = 0; l < L; ++l) {
        pv[l % K] += av[l];
        if (kDot) pd[l % K] += ad[l];
      }
      for (; o < hi; ++o) {
        for (int64_t k = 0; k < K; ++k) {
          const A a = load(v, o * K + k);
          pv[k] += a * a;
          if (kDot) pd[k] += a * static_cast<A>(load(dw, o * K + k));
        }
      }
    });
  } else {
    // Contiguous segments of length inner, the flat range split evenly across threads
    // (a thread may start or stop in the middle of a segment).
    parallel_ranges(nt, n, [&](int t, int64_t lo, int64_t hi) {
      A *pv = part.data() + static_cast<size_t>(t) * K * 2;
      A *pd = pv + K;
      int64_t i = lo;
      while (i < hi) {
        const int64_t seg = i / inner;
        const int64_t end = std::min(hi, (seg + 1) * inner);
        const int64_t k = seg % K;
        segment_sums<T, A, kDot>(v, dw, i, end, pv + k, pd + k);
        i = end;
      }
    });
  }
  for (int64_t k = 0; k < K; ++k) {
    A a = 0, b = 0;
    for (int t = 0; t < nt; ++t) {
      a += part[static_cast<size_t>(t) * K * 2 + k];
      b += part[static_cast<size_t>(t) * K * 2 + K + k];
    }
    svv[k] = a;
    if (kDot) svd[k] = b;
  }
}

// out = alpha[k] * x (+ beta[k] * y when kTwo) over the (outer, K, inner) view.
template <typename T, typename A, bool kTwo>
void apply(const T *x, const T *y, T *out, int64_t outer, int64_t K, int64_t inner, const A *alpha,
           const A *beta) {
  const int64_t n = outer * K * inner;
  const int nt = thread_count(n);
  if (inner == 1) {
    // Same blocking as in reduce: the coefficients repeated over a block of R rows.
    const int64_t rows = block_rows(K);
    const int64_t L = rows * K;
    std::vector<A> rep(static_cast<size_t>(2 * L));
    for (int64_t l = 0; l < L; ++l) {
      rep[l] = alpha[l % K];
      rep[L + l] = kTwo ? beta[l % K] : A(0);
    }
    parallel_ranges(nt, outer, [&](int, int64_t lo, int64_t hi) {
      const A *__restrict__ ra = rep.data();
      const A *__restrict__ rb = rep.data() + L;
      int64_t o = lo;
      for (; o + rows <= hi; o += rows) {
        const T *__restrict__ xs = x + o * K;
        const T *__restrict__ ys = kTwo ? y + o * K : nullptr;
        T *__restrict__ os = out + o * K;
#pragma omp simd
        for (int64_t l = 0; l < L; ++l) {
          A r = ra[l] * static_cast<A>(load(xs, l));
          if (kTwo) r += rb[l] * static_cast<A>(load(ys, l));
          store(os, l, r);
        }
      }
      for (; o < hi; ++o) {
        for (int64_t k = 0; k < K; ++k) {
          A r = alpha[k] * static_cast<A>(load(x, o * K + k));
          if (kTwo) r += beta[k] * static_cast<A>(load(y, o * K + k));
          store(out, o * K + k, r);
        }
      }
    });
    return;
  }
  parallel_ranges(nt, n, [&](int, int64_t lo, int64_t hi) {
    int64_t i = lo;
    while (i < hi) {
      const int64_t seg = i / inner;
      const int64_t end = std::min(hi, (seg + 1) * inner);
      const int64_t k = seg % K;
      const A a = alpha[k];
      const A b = kTwo ? beta[k] : A(0);
      const T *__restrict__ xs = x;
      const T *__restrict__ ys = y;
      T *__restrict__ os = out;
#pragma omp simd
      for (int64_t j = i; j < end; ++j) {
        A r = a * static_cast<A>(load(xs, j));
        if (kTwo) r += b * static_cast<A>(load(ys, j));
        store(os, j, r);
      }
      i = end;
    }
  });
}

struct View {
  int64_t outer, K, inner;
};

// The (outer, K, inner) view of a shape for a kept axis (-1: none); K = 0 when invalid.
// eps travels as the bit pattern of a float64 inside the int64 meta tensor.
double meta_eps(const void *meta) {
  double eps;
  std::memcpy(&eps, meta, sizeof eps);
  return eps;
}

View make_view(int nd, const int64_t *shape, int64_t axis) {
  const int64_t n = numel(nd, shape);
  if (axis < 0) return {1, 1, n};
  if (axis >= nd) return {0, 0, 0};
  View view{1, shape[axis], 1};
  for (int64_t i = 0; i < axis; ++i) view.outer *= shape[i];
  for (int64_t i = axis + 1; i < nd; ++i) view.inner *= shape[i];
  return view;
}

// For dim 0 each norm covers one contiguous row. When a row fits in cache, reducing it and
// then scaling it right away reads it from memory once instead of twice.
constexpr int64_t kCachedRowBytes = 128 * 1024;

template <typename T>
bool rows_fit_in_cache(const View &view) {
  return view.outer == 1 && view.K > 1 && view.inner * static_cast<int64_t>(sizeof(T)) <= kCachedRowBytes;
}

// out[j] = a * x[j] (+ b * y[j] when kTwo) for j in [lo, hi).
template <typename T, typename A, bool kTwo>
inline void scale_range(const T *__restrict__ x, const T *__restrict__ y, T *__restrict__ out, int64_t lo,
                        int64_t hi, A a, A b) {
#pragma omp simd
  for (int64_t j = lo; j < hi; ++j) {
    A r = a * static_cast<A>(load(x, j));
    if (kTwo) r += b * static_cast<A>(load(y, j));
    store(out, j, r);
  }
}

// inputs: v, g (K values), meta [eps, axis]; output: w like v.
template <typename T>
int forward(void **params, View view, Dt g_dt) {
  using A = typename Acc<T>::type;
  const T *v = static_cast<const T *>(params[0]);
  const void *g = params[1];
  const A eps = static_cast<A>(meta_eps(params[2]));
  T *w = static_cast<T *>(params[3]);
  const int64_t outer = view.outer, K = view.K, inner = view.inner;
  if (rows_fit_in_cache<T>(view)) {
    parallel_ranges(thread_count(K * inner), K, [&](int, int64_t lo, int64_t hi) {
      for (int64_t k = lo; k < hi; ++k) {
        A sum = 0;
        segment_sums<T, A, false>(v, nullptr, k * inner, (k + 1) * inner, &sum, nullptr);
        const A scale = round_to<T, A>(static_cast<A>(load_any(g, g_dt, k)) / std::sqrt(sum + eps));
        scale_range<T, A, false>(v, nullptr, w, k * inner, (k + 1) * inner, scale, A(0));
      }
    });
    return 0;
  }
  std::vector<A> s(K);
  reduce<T, A, false>(v, nullptr, outer, K, inner, s.data(), nullptr);
  for (int64_t k = 0; k < K; ++k) {
    const A norm = std::sqrt(s[k] + eps);
    s[k] = round_to<T, A>(static_cast<A>(load_any(g, g_dt, k)) / norm);
  }
  apply<T, A, false>(v, nullptr, w, outer, K, inner, s.data(), nullptr);
  return 0;
}

// inputs: v, g (K values), dw like v, meta [eps, axis]; outputs: dv like v, dg like g.
//   n = sqrt(sum v*v + eps), s = g / n, d = sum dw*v
//   dg = d / n,   dv = s * dw - (s * d / n^2) * v
template <typename T>
int backward(void **params, View view, Dt g_dt) {
  using A = typename Acc<T>::type;
  const T *v = static_cast<const T *>(params[0]);
  const void *g = params[1];
  const T *dw = static_cast<const T *>(params[2]);
  const A eps = static_cast<A>(meta_eps(params[3]));
  T *dv = static_cast<T *>(params[4]);
  void *dg = params[5];
  const int64_t outer = view.outer, K = view.K, inner = view.inner;
  if (rows_fit_in_cache<T>(view)) {
    parallel_ranges(thread_count(K * inner), K, [&](int, int64_t lo, int64_t hi) {
      for (int64_t k = lo; k < hi; ++k) {
        A svv = 0, svd = 0;
        segment_sums<T, A, true>(v, dw, k * inner, (k + 1) * inner, &svv, &svd);
        const A norm = std::sqrt(svv + eps);
        const A scale = static_cast<A>(load_any(g, g_dt, k)) / norm;
        store_any(dg, g_dt, k, svd / norm);
        scale_range<T, A, true>(dw, v, dv, k * inner, (k + 1) * inner, scale, -scale * svd / (norm * norm));
      }
    });
    return 0;
  }
  std::vector<A> svv(K), svd(K), alpha(K), beta(K);
  reduce<T, A, true>(v, dw, outer, K, inner, svv.data(), svd.data());
  for (int64_t k = 0; k < K; ++k) {
    const A norm = std::sqrt(svv[k] + eps);
    const A scale = static_cast<A>(load_any(g, g_dt, k)) / norm;
    store_any(dg, g_dt, k, svd[k] / norm);
    alpha[k] = scale;
    beta[k] = -scale * svd[k] / (norm * norm);
  }
  apply<T, A, true>(dw, v, dv, outer, K, inner, alpha.data(), beta.data());
  return 0;
}

}  // namespace

extern "C" {

// Return codes other than 0 make MindSpore raise: 1 wrong arity, 2 shapes disagree,
// 3 unsupported dtype.
int WeightNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                      void *, void *) {
  if (nparam != 4 || numel(ndims[2], shapes[2]) != 2) return 1;
  if (std::strcmp(dtypes[2], "int64") != 0) return 3;
  const View view = make_view(ndims[0], shapes[0], static_cast<const int64_t *>(params[2])[1]);
  if (view.K == 0 || numel(ndims[1], shapes[1]) != view.K) return 2;
  const Dt g_dt = parse_dtype(dtypes[1]);
  if (g_dt == Dt::unknown || parse_dtype(dtypes[3]) != parse_dtype(dtypes[0])) return 3;
  switch (parse_dtype(dtypes[0])) {
    case Dt::f32: return forward<float>(params, view, g_dt);
    case Dt::f64: return forward<double>(params, view, g_dt);
    case Dt::f16: return forward<_Float16>(params, view, g_dt);
    case Dt::bf16: return forward<bf16_t>(params, view, g_dt);
    default: return 3;
  }
}

int WeightNormBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                       void *, void *) {
  if (nparam != 6 || numel(ndims[3], shapes[3]) != 2) return 1;
  if (std::strcmp(dtypes[3], "int64") != 0) return 3;
  const View view = make_view(ndims[0], shapes[0], static_cast<const int64_t *>(params[3])[1]);
  if (view.K == 0 || numel(ndims[1], shapes[1]) != view.K) return 2;
  if (numel(ndims[2], shapes[2]) != numel(ndims[0], shapes[0])) return 2;
  const Dt g_dt = parse_dtype(dtypes[1]);
  const Dt v_dt = parse_dtype(dtypes[0]);
  if (g_dt == Dt::unknown || parse_dtype(dtypes[5]) != g_dt) return 3;
  if (parse_dtype(dtypes[2]) != v_dt || parse_dtype(dtypes[4]) != v_dt) return 3;
  switch (v_dt) {
    case Dt::f32: return backward<float>(params, view, g_dt);
    case Dt::f64: return backward<double>(params, view, g_dt);
    case Dt::f16: return backward<_Float16>(params, view, g_dt);
    case Dt::bf16: return backward<bf16_t>(params, view, g_dt);
    default: return 3;
  }
}

}  // extern "C"
