/* Keyed Philox4x32-10 normals on the CPU: the bits of sdekit.noise, at the cost of a plain loop.
 *
 * Plain C (no Python or torch headers) so it compiles in a fraction of a second; sdekit/_native.py
 * builds it on first use and calls it through ctypes.  Layout (see sdekit/noise.py):
 *   key (k0, k1), counter (g, sample_index[b], stream[b], 0) for group g = element / 4;
 *   words (i0, i1, i2, i3) -> r0 cos t0, r0 sin t0, r1 cos t1, r1 sin t1 with
 *   u = ((i >> 8) + 1/2) 2^-24, r = sqrt(-2 ln u_even), t = fl32(2 pi) u_odd (float32).
 * The Philox words are the reference's bit for bit.  ln, sin and cos are branch-free float32
 * polynomials (FreeBSD/musl logf, Cephes sinf/cosf) so that the compiler vectorises them; they
 * differ from torch's by float32 rounding only.  Build with -ffp-contract=off: no fused
 * multiply-adds, so every machine (SSE2, AVX2, AVX-512, NEON) computes the same bits.
 */
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SDEKIT_NO_CLONES)
#define SDEKIT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SDEKIT_CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define BLK 256 /* groups per block: 4 KiB of output, the work unit of a thread */
#define PARALLEL_MIN 32768 /* elements: below this one thread (the fork costs more than it saves) */

typedef union { float f; uint32_t u; } bits32;

INLINE void philox_block(uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t g0, int n,
                         uint32_t *restrict o0, uint32_t *restrict o1, uint32_t *restrict o2,
                         uint32_t *restrict o3) {
    for (int i = 0; i < n; i++) {
        uint32_t x0 = g0 + (uint32_t)i, x1 = c1, x2 = c2, x3 = 0, ka = k0, kb = k1;
        for (int r = 0; r < 10; r++) {
            uint64_t p0 = (uint64_t)x0 * PHILOX_M0, p1 = (uint64_t)x2 * PHILOX_M1;
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ x1 ^ ka, n2 = (uint32_t)(p0 >> 32) ^ x3 ^ kb;
            x1 = (uint32_t)p1;
            x3 = (uint32_t)p0;
            x0 = n0;
            x2 = n2;
            ka += PHILOX_W0;
            kb += PHILOX_W1;
        }
        o0[i] = x0;
        o1[i] = x1;
        o2[i] = x2;
        o3[i] = x3;
    }
}

INLINE float unit(uint32_t w) { return ((float)(int32_t)(w >> 8) + 0.5f) * 0x1p-24f; }

/* ln x for a positive normal float x (FreeBSD e_logf.c / musl logf, < 1 ulp), without branches. */
INLINE float log_f(float x) {
    bits32 v = {x};
    uint32_t ix = v.u + (0x3f800000u - 0x3f3504f3u);
    int32_t k = (int32_t)(ix >> 23) - 0x7f;
    v.u = (ix & 0x007fffffu) + 0x3f3504f3u; /* mantissa in [sqrt(1/2), sqrt(2)) */
    float f = v.f - 1.0f;
    float s = f / (2.0f + f), z = s * s, w = z * z;
    float t1 = w * (0x1.999c26p-2f + w * 0x1.f13c4cp-3f);
    float t2 = z * (0x1.555554p-1f + w * 0x1.23d3dcp-2f);
    float hfsq = 0.5f * f * f, dk = (float)k;
    return s * (hfsq + t2 + t1) + dk * 9.0580006145e-06f - hfsq + f + dk * 6.9313812256e-01f;
}

/* sin t and cos t for t in [0, 2 pi + ulp]: t - q pi/2 in double with fdlibm's two-part pi/2 (33 bits,
 * so q * pio2_1 and t - q * pio2_1 are exact; then an error of ~1e-26, against |x| >= 1.2e-8 at the
 * float nearest 3 pi/2), rounded to float; Cephes's sinf/cosf polynomials on [-pi/4, pi/4]. */
INLINE void sincos_f(float t, float *s, float *c) {
    int32_t q = (int32_t)(t * 0.63661977236758134f + 0.5f);
    double dq = (double)q;
    float x = (float)(((double)t - dq * 1.57079632673412561417e+00) - dq * 6.07710050650619224932e-11);
    float z = x * x;
    float sx = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * x + x;
    float cx = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z
               - 0.5f * z + 1.0f;
    float sv = (q & 1) ? cx : sx, cv = (q & 1) ? sx : cx;
    *s = (q & 2) ? -sv : sv;
    *c = ((q + 1) & 2) ? -cv : cv;
}

INLINE void box_muller_block(const uint32_t *restrict i0, const uint32_t *restrict i1,
                             const uint32_t *restrict i2, const uint32_t *restrict i3, int n,
                             float *restrict z) {
    const float two_pi = 6.2831853071795864769f; /* torch rounds the Python scalar 2 pi to float32 */
    for (int i = 0; i < n; i++) {
        float r0 = __builtin_sqrtf(-2.0f * log_f(unit(i0[i])));
        float r1 = __builtin_sqrtf(-2.0f * log_f(unit(i2[i])));
        float s0, c0, s1, c1;
        sincos_f(two_pi * unit(i1[i]), &s0, &c0);
        sincos_f(two_pi * unit(i3[i]), &s1, &c1);
        z[4 * i] = r0 * c0;
        z[4 * i + 1] = r0 * s0;
        z[4 * i + 2] = r1 * c1;
        z[4 * i + 3] = r1 * s1;
    }
}

/* kind 0: normals (float32), kind 1: Rademacher +-1 (float32), kind 2: raw words (uint32). */
SDEKIT_CLONES static void row_block(int kind, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, int64_t g0,
                                    int64_t numel, void *row_out) {
    uint32_t w0[BLK], w1[BLK], w2[BLK], w3[BLK];
    float z[4 * BLK];
    int64_t left = numel - 4 * g0;
    int n = left >= 4 * BLK ? BLK : (int)((left + 3) / 4);
    int64_t count = left >= 4 * BLK ? 4 * BLK : left;
    philox_block(k0, k1, c1, c2, (uint32_t)g0, n, w0, w1, w2, w3);
    if (kind == 0) {
        box_muller_block(w0, w1, w2, w3, n, z);
    } else {
        uint32_t *zw = (uint32_t *)z;
        for (int i = 0; i < n; i++) {
            zw[4 * i] = w0[i];
            zw[4 * i + 1] = w1[i];
            zw[4 * i + 2] = w2[i];
            zw[4 * i + 3] = w3[i];
        }
        if (kind == 1)
            for (int i = 0; i < 4 * n; i++) z[i] = (zw[i] >> 31) ? 1.0f : -1.0f;
    }
    memcpy((char *)row_out + 4 * 4 * g0, z, (size_t)count * 4);
}

static void run(int kind, uint32_t k0, uint32_t k1, const int64_t *stream, int64_t stream0,
                const int64_t *sample_index, int64_t batch, int64_t numel, void *out, int threads) {
    int64_t blocks = (numel + 4 * BLK - 1) / (4 * BLK), total = batch * blocks;
    if (threads < 1 || batch * numel < PARALLEL_MIN) threads = 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (int64_t t = 0; t < total; t++) {
        int64_t b = t / blocks, blk = t - b * blocks;
        uint32_t c2 = (uint32_t)(stream ? stream[b] : stream0);
        row_block(kind, k0, k1, (uint32_t)sample_index[b], c2, blk * BLK, numel, (char *)out + 4 * b * numel);
    }
}

/* out: float32 [batch * numel], row b = the normals of counter (., sample_index[b], stream, 0);
 * stream is stream_values[b] when stream_values is not NULL, else stream0. */
void sdekit_normals(uint32_t k0, uint32_t k1, const int64_t *stream_values, int64_t stream0,
                    const int64_t *sample_index, int64_t batch, int64_t numel, float *out, int threads) {
    run(0, k0, k1, stream_values, stream0, sample_index, batch, numel, out, threads);
}

/* out: float32 +-1 [batch * numel]: the top bit of each word (sdekit.noise.counter_rademacher). */
void sdekit_rademacher(uint32_t k0, uint32_t k1, const int64_t *stream_values, int64_t stream0,
                       const int64_t *sample_index, int64_t batch, int64_t numel, float *out, int threads) {
    run(1, k0, k1, stream_values, stream0, sample_index, batch, numel, out, threads);
}

/* out: uint32 [batch * numel], numel = 4 * groups: (b, 4 g + w) = Philox word w of counter
 * (g, sample_index[b], stream, 0). */
void sdekit_words(uint32_t k0, uint32_t k1, const int64_t *stream_values, int64_t stream0,
                  const int64_t *sample_index, int64_t batch, int64_t numel, uint32_t *out, int threads) {
    run(2, k0, k1, stream_values, stream0, sample_index, batch, numel, out, threads);
}

/* The Box-Muller transform alone, for tests: words [n * 4] -> out [n * 4]. */
SDEKIT_CLONES void sdekit_box_muller(const uint32_t *words, int64_t n, float *out) {
    uint32_t w0[BLK], w1[BLK], w2[BLK], w3[BLK];
    for (int64_t g0 = 0; g0 < n; g0 += BLK) {
        int m = n - g0 < BLK ? (int)(n - g0) : BLK;
        for (int i = 0; i < m; i++) {
            w0[i] = words[4 * (g0 + i)];
            w1[i] = words[4 * (g0 + i) + 1];
            w2[i] = words[4 * (g0 + i) + 2];
            w3[i] = words[4 * (g0 + i) + 3];
        }
        box_muller_block(w0, w1, w2, w3, m, out + 4 * g0);
    }
}

/* The affine update of sdekit.kernels.affine_update_ref in one pass: per element of row b,
 *   mean = a_b x + b_b s;  mean = mean + d_b (when has_d);  new = mean + c_b z (mode 1, 2), new = mean (mode 0)
 * in that order of operations, each rounded to T (-ffp-contract=off: no fused multiply-adds), which is
 * the eager reference's order, so the bits are its bits given the same z.  Mode 1 draws z here, the
 * native normal draw's code (the same Philox words and float32 Box-Muller, converted exactly to T);
 * mode 2 reads z (type T); mode 0 has no noise.  A block is read (x, s, z) before it is written (out,
 * mean), so out may be x, s or z itself. */
#define DEFINE_AFFINE(T, SUF)                                                                                  \
    SDEKIT_CLONES static void affine_block_##SUF(int mode, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, \
                                                 int64_t g0, int64_t numel, const T *x, const T *s,            \
                                                 const T *zin, T a, T b, T c, T d, int has_d, T *out,          \
                                                 T *mean_out) {                                                \
        uint32_t w0[BLK], w1[BLK], w2[BLK], w3[BLK];                                                           \
        float zf[4 * BLK];                                                                                     \
        T m[4 * BLK], r[4 * BLK];                                                                              \
        int64_t e0 = 4 * g0, left = numel - e0;                                                                \
        int count = left >= 4 * BLK ? 4 * BLK : (int)left;                                                     \
        x += e0;                                                                                               \
        s += e0;                                                                                               \
        for (int i = 0; i < count; i++) m[i] = a * x[i] + b * s[i];                                            \
        if (has_d)                                                                                             \
            for (int i = 0; i < count; i++) m[i] = m[i] + d;                                                   \
        if (mode == 1) {                                                                                       \
            int n = (count + 3) / 4;                                                                           \
            philox_block(k0, k1, c1, c2, (uint32_t)g0, n, w0, w1, w2, w3);                                     \
            box_muller_block(w0, w1, w2, w3, n, zf);                                                           \
            for (int i = 0; i < count; i++) r[i] = m[i] + c * (T)zf[i];                                        \
        } else if (mode == 2) {                                                                                \
            zin += e0;                                                                                         \
            for (int i = 0; i < count; i++) r[i] = m[i] + c * zin[i];                                          \
        }                                                                                                      \
        memcpy(out + e0, mode ? r : m, (size_t)count * sizeof(T));                                             \
        if (mean_out) memcpy(mean_out + e0, m, (size_t)count * sizeof(T));                                     \
    }                                                                                                          \
                                                                                                               \
    void sdekit_affine_##SUF(int mode, uint32_t k0, uint32_t k1, const int64_t *stream_values, int64_t stream0, \
                             const int64_t *sample_index, int64_t batch, int64_t numel, const T *x, const T *s,  \
                             const T *z, const T *const *coef_ptr, const int64_t *coef_stride,                   \
                             const double *coef_value, int has_d, T *out, T *mean, int threads) {               \
        int64_t blocks = (numel + 4 * BLK - 1) / (4 * BLK), total = batch * blocks;                            \
        if (threads < 1 || batch * numel < PARALLEL_MIN) threads = 1;                                          \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1)")                      \
        for (int64_t t = 0; t < total; t++) {                                                                  \
            int64_t bi = t / blocks, blk = t - bi * blocks, row = bi * numel;                                  \
            T k[4];                                                                                            \
            for (int j = 0; j < 4; j++)                                                                        \
                k[j] = coef_ptr[j] ? coef_ptr[j][bi * coef_stride[j]] : (T)coef_value[j];                      \
            uint32_t c1 = mode == 1 ? (uint32_t)sample_index[bi] : 0;                                          \
            uint32_t c2 = mode == 1 ? (uint32_t)(stream_values ? stream_values[bi] : stream0) : 0;             \
            affine_block_##SUF(mode, k0, k1, c1, c2, blk * BLK, numel, x + row, s + row,                       \
                               mode == 2 ? z + row : z, k[0], k[1], k[2], k[3], has_d, out + row,               \
                               mean ? mean + row : mean);                                                      \
        }                                                                                                      \
    }

DEFINE_AFFINE(float, f32)
DEFINE_AFFINE(double, f64)

/* sdekit_affine_* with its arguments packed in one int64 array (pointers as integers) and the four
 * float coefficients in a double array: a ctypes call converts each argument through Python, and for
 * a small batch the eighteen conversions cost more than the update (sdekit/_native.py keeps the
 * array between the steps of a loop and rewrites only what changes).  Slots: */
enum {
    PK_MODE, PK_K0, PK_K1, PK_STREAMS, PK_STREAM0, PK_INDEX, PK_BATCH, PK_NUMEL, PK_X, PK_S, PK_Z,
    PK_COEF_PTR, PK_COEF_STRIDE = PK_COEF_PTR + 4, PK_HAS_D = PK_COEF_STRIDE + 4, PK_OUT, PK_MEAN, PK_THREADS,
    PK_SLOTS
};
#define PK_PTR(T, v) ((T)(intptr_t)(v))
#define DEFINE_AFFINE_PACKED(T, SUF)                                                                           \
    void sdekit_affine_packed_##SUF(const int64_t *a, const double *coef_value) {                             \
        const T *coef_ptr[4];                                                                                  \
        for (int j = 0; j < 4; j++) coef_ptr[j] = PK_PTR(const T *, a[PK_COEF_PTR + j]);                       \
        sdekit_affine_##SUF((int)a[PK_MODE], (uint32_t)a[PK_K0], (uint32_t)a[PK_K1],                           \
                            PK_PTR(const int64_t *, a[PK_STREAMS]), a[PK_STREAM0],                            \
                            PK_PTR(const int64_t *, a[PK_INDEX]), a[PK_BATCH], a[PK_NUMEL],                   \
                            PK_PTR(const T *, a[PK_X]), PK_PTR(const T *, a[PK_S]), PK_PTR(const T *, a[PK_Z]), \
                            coef_ptr, a + PK_COEF_STRIDE, coef_value, (int)a[PK_HAS_D], PK_PTR(T *, a[PK_OUT]), \
                            PK_PTR(T *, a[PK_MEAN]), (int)a[PK_THREADS]);                                      \
    }

DEFINE_AFFINE_PACKED(float, f32)
DEFINE_AFFINE_PACKED(double, f64)

/* The number of slots, so that the Python side can check its layout against this one. */
int sdekit_affine_packed_slots(void) { return PK_SLOTS; }

int sdekit_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
