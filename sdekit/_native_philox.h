/* Shared by the native sources (sdekit/_native_noise.c, sdekit/_native_tree.c): the keyed Philox4x32-10 words
 * and their float32 Box-Muller normals, the bits of sdekit.noise (layout in _native_noise.c's header).
 * Only static inline functions and macros: each source that includes it gets its own copies. */
#ifndef SDEKIT_NATIVE_PHILOX_H
#define SDEKIT_NATIVE_PHILOX_H
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

#endif
