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
#include "_native_philox.h"

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
