/* The stateless Brownian tree of sdekit/brownian/tree.py, evaluated natively: the same path, one pass.
 *
 * The torch code evaluates a batch of queries level by level (a split, a gather and a select per level,
 * each a pass over the whole batch).  Here one task takes one sample b and a block of at most TE of its
 * elements through all the queries, in their order.  It keeps the nodes of its current root-to-leaf
 * path and, per node, its split (both halves), so a query starts from its common ancestor with the
 * previous one.  Queries in time order therefore split each node on their paths once.  The draws are
 * the torch code's:
 *   - node i of level l has stream 2^l + i, the leaf bridge of leaf j has stream 2^depth + j;
 *   - each gives two normals per element, flat elements e and P + e of the (2, P) keyed draw
 *     (sdekit.noise.counter_normal_unchecked), P = numel of a sample.
 * The float64 formulas are sdekit/brownian/bridge.py's, in the torch code's order of operations.  A
 * node query (r = 0, or r = 1 at t1) takes the node formula and an interior query the bridge, each
 * query on its own (the torch code takes the bridge for every query of a chunk that has an interior one;
 * the two agree to rounding).  Every value is a function of (seed, sample_index[b], element, time)
 * alone, not of the batch, the block or the query order.
 */
#include "_native_philox.h"

#include <math.h>
#include <stdlib.h>

#define TE 128     /* elements per task */
#define MAXLEV 31  /* sdekit.brownian.tree.MAX_DEPTH */
#define ARRAYS 8   /* per level: w, H, W_a, K_a, and the split w_L, H_L, w_R, H_R */
#define SCRATCH 8  /* x1, x2, bridge x1, bridge x2, W, K, previous W, previous K */
#define TREE_PARALLEL_MIN 65536 /* element-queries: below this one thread */

typedef struct {
    uint32_t k0, k1;
    const int64_t *index;
    int64_t batch, numel;
    int depth;
    double length;
    int64_t n;
    const int64_t *leaf;
    const double *r, *t;
    int64_t sq, sb; /* query q of row b reads leaf, r, t at q * sq + b * sb */
    int mode;       /* 0: values W, K (float64); 1: increments dW, dZ (float32); 2: increments (float64) */
    void *out_w, *out_k; /* out_k NULL: K (dZ) not computed */
} tree_args;

/* Two float64 normals per element of the block [e0, e0 + cnt): flat elements e and numel + e. */
SDEKIT_CLONES static void node_normals(const tree_args *a, uint32_t sample, uint32_t stream, int64_t e0, int cnt,
                                       double *restrict x1, double *restrict x2) {
    uint32_t w0[TE / 4 + 2], w1[TE / 4 + 2], w2[TE / 4 + 2], w3[TE / 4 + 2];
    float z[TE + 8];
    int groups = (cnt + 3) / 4;
    philox_block(a->k0, a->k1, sample, stream, (uint32_t)(e0 / 4), groups, w0, w1, w2, w3);
    box_muller_block(w0, w1, w2, w3, groups, z);
    for (int i = 0; i < cnt; i++) x1[i] = (double)z[i];
    int64_t s = a->numel + e0;
    int off = (int)(s & 3);
    groups = (off + cnt + 3) / 4;
    philox_block(a->k0, a->k1, sample, stream, (uint32_t)(s >> 2), groups, w0, w1, w2, w3);
    box_muller_block(w0, w1, w2, w3, groups, z);
    for (int i = 0; i < cnt; i++) x2[i] = (double)z[off + i];
}

/* Both halves of a node of length h (bridge.split_midpoint). */
SDEKIT_CLONES static void split_values(const double *restrict w, const double *restrict H, double h,
                                       const double *restrict x1, const double *restrict x2, int cnt,
                                       double *restrict wL, double *restrict HL, double *restrict wR,
                                       double *restrict HR) {
    double sh = sqrt(h), cb = 0.25 * sh, cc = 0.125 * sh, cs = sh / (4.0 * sqrt(3.0));
    for (int i = 0; i < cnt; i++) {
        double b_mid = 1.5 * H[i] + cb * x1[i];
        double common = 0.25 * H[i] - cc * x1[i];
        double spread = cs * x2[i];
        wL[i] = 0.5 * w[i] + b_mid;
        HL[i] = common + spread;
        wR[i] = 0.5 * w[i] - b_mid;
        HR[i] = common - spread;
    }
}

/* The child of a node of length h: (w, H, W_a, K_a) of its left or right half. */
SDEKIT_CLONES static void child(double *const *p, double *const *c, double h, int right, int need_k, int cnt) {
    const double *restrict Wa = p[2], *restrict Ka = p[3], *restrict wL = p[4], *restrict HL = p[5];
    double *restrict cW = c[2], *restrict cK = c[3];
    double half = 0.5 * h;
    if (!right) {
        memcpy(c[0], p[4], (size_t)cnt * sizeof(double));
        memcpy(c[1], p[5], (size_t)cnt * sizeof(double));
        memcpy(cW, Wa, (size_t)cnt * sizeof(double));
        if (need_k) memcpy(cK, Ka, (size_t)cnt * sizeof(double));
        return;
    }
    memcpy(c[0], p[6], (size_t)cnt * sizeof(double));
    memcpy(c[1], p[7], (size_t)cnt * sizeof(double));
    if (need_k)
        for (int i = 0; i < cnt; i++) cK[i] = (Ka[i] + half * (HL[i] + 0.5 * wL[i])) + half * Wa[i];
    for (int i = 0; i < cnt; i++) cW[i] = Wa[i] + wL[i];
}

/* W(t) and K(t) at the fraction r of a leaf of length h with values v (node formula at r = 0 or 1, else the
 * bridge of bridge.interior_values with the normals x1, x2). */
SDEKIT_CLONES static void leaf_values(double *const *v, double h, double r, const double *restrict x1,
                                      const double *restrict x2, int need_k, int cnt, double *restrict W,
                                      double *restrict K) {
    const double *restrict w = v[0], *restrict H = v[1], *restrict Wa = v[2], *restrict Ka = v[3];
    if (r <= 0.0 || r >= 1.0) {
        double rh = r * h;
        for (int i = 0; i < cnt; i++) W[i] = Wa[i] + r * w[i];
        if (need_k)
            for (int i = 0; i < cnt; i++) K[i] = Ka[i] + rh * ((Wa[i] + H[i]) + 0.5 * w[i]);
        return;
    }
    /* bridge.interior_coefficients, in its factored (cancellation-free) forms */
    double q = 1.0 - r, u = r * q, spread = 1.0 - 3.0 * u;
    double mB = 6.0 * r * q, mL = 3.0 * (r * r) - 2.0 * (r * r * r);
    double cBB = u * spread, sBB = sqrt(cBB > 0.0 ? cBB : 0.0);
    double sLB = sBB > 1e-300 ? (u * u * (0.5 - r)) / sBB : 0.0;
    double cLL = u * u * u / (12.0 * spread), sLL = sqrt(cLL > 0.0 ? cLL : 0.0), sh = sqrt(h);
    double cx = sh * sBB, ci = mL * h, cj = h * sh, cu = 0.5 * r * r * h, rh = r * h;
    for (int i = 0; i < cnt; i++) W[i] = Wa[i] + (r * w[i] + (mB * H[i] + cx * x1[i]));
    if (need_k)
        for (int i = 0; i < cnt; i++)
            K[i] = (Ka[i] + rh * Wa[i]) + (cu * w[i] + (ci * H[i] + cj * (sLB * x1[i] + sLL * x2[i])));
}

SDEKIT_CLONES static void store(const tree_args *a, int64_t q, int64_t b, int64_t e0, int cnt, const double *W,
                                const double *K, const double *Wp, const double *Kp, int need_k) {
    if (a->mode == 0) {
        int64_t at = (q * a->batch + b) * a->numel + e0;
        memcpy((double *)a->out_w + at, W, (size_t)cnt * sizeof(double));
        if (need_k) memcpy((double *)a->out_k + at, K, (size_t)cnt * sizeof(double));
        return;
    }
    if (q == 0) return;
    int64_t at = ((q - 1) * a->batch + b) * a->numel + e0;
    double h = a->t[q * a->sq + b * a->sb] - a->t[(q - 1) * a->sq + b * a->sb];
    if (a->mode == 1) {
        float *restrict dW = (float *)a->out_w + at;
        for (int i = 0; i < cnt; i++) dW[i] = (float)(W[i] - Wp[i]);
        if (need_k) {
            float *restrict dZ = (float *)a->out_k + at;
            for (int i = 0; i < cnt; i++) dZ[i] = (float)((K[i] - Kp[i]) - h * Wp[i]);
        }
    } else {
        double *restrict dW = (double *)a->out_w + at;
        for (int i = 0; i < cnt; i++) dW[i] = W[i] - Wp[i];
        if (need_k) {
            double *restrict dZ = (double *)a->out_k + at;
            for (int i = 0; i < cnt; i++) dZ[i] = (K[i] - Kp[i]) - h * Wp[i];
        }
    }
}

/* One task: sample b, elements [e0, e0 + cnt), every query.  ws: (ARRAYS (depth + 1) + SCRATCH) TE doubles. */
static void tree_task(const tree_args *a, int64_t b, int64_t e0, int cnt, double *ws) {
    int depth = a->depth, need_k = a->out_k != NULL;
    double *lev[MAXLEV + 1][ARRAYS], len[MAXLEV + 1];
    int64_t id[MAXLEV + 1];
    int split_ok[MAXLEV + 1];
    for (int l = 0; l <= depth; l++)
        for (int j = 0; j < ARRAYS; j++) lev[l][j] = ws + (ARRAYS * l + j) * TE;
    double *x1 = ws + ARRAYS * (depth + 1) * TE, *x2 = x1 + TE, *bx1 = x2 + TE, *bx2 = bx1 + TE;
    double *W = bx2 + TE, *K = W + TE, *Wp = K + TE, *Kp = Wp + TE;
    uint32_t sample = (uint32_t)a->index[b];
    len[0] = a->length;
    for (int l = 0; l < depth; l++) len[l + 1] = 0.5 * len[l];
    node_normals(a, sample, 0u, e0, cnt, x1, x2);
    double sr = sqrt(len[0]), sr12 = sqrt(len[0] / 12.0);
    for (int i = 0; i < cnt; i++) {
        lev[0][0][i] = sr * x1[i];
        lev[0][1][i] = sr12 * x2[i];
        lev[0][2][i] = 0.0;
        lev[0][3][i] = 0.0;
    }
    id[0] = 0;
    split_ok[0] = 0;
    int valid = 0; /* levels 0 .. valid hold the current path */
    int64_t bridge_leaf = -1;
    for (int64_t q = 0; q < a->n; q++) {
        int64_t at = q * a->sq + b * a->sb, leaf = a->leaf[at];
        double r = a->r[at];
        int c = 0;
        while (c < valid && id[c + 1] == (leaf >> (depth - c - 1))) c++;
        for (int l = c; l < depth; l++) {
            if (!split_ok[l]) {
                node_normals(a, sample, (uint32_t)(((int64_t)1 << l) + id[l]), e0, cnt, x1, x2);
                double *const *v = lev[l];
                split_values(v[0], v[1], len[l], x1, x2, cnt, v[4], v[5], v[6], v[7]);
                split_ok[l] = 1;
            }
            int64_t next = leaf >> (depth - l - 1);
            child(lev[l], lev[l + 1], len[l], (int)(next & 1), need_k, cnt);
            id[l + 1] = next;
            split_ok[l + 1] = 0;
        }
        valid = depth;
        if (r > 0.0 && r < 1.0 && bridge_leaf != leaf) {
            node_normals(a, sample, (uint32_t)(((int64_t)1 << depth) + leaf), e0, cnt, bx1, bx2);
            bridge_leaf = leaf;
        }
        leaf_values(lev[depth], len[depth], r, bx1, bx2, need_k, cnt, W, K);
        store(a, q, b, e0, cnt, W, K, Wp, Kp, need_k);
        double *s = Wp;
        Wp = W;
        W = s;
        s = Kp;
        Kp = K;
        K = s;
    }
}

/* Evaluate the tree at n queries (leaf, fraction r, time t per query and row) for every sample and element.
 * mode 0: out_w, out_k float64 (n, batch, numel) = W(t) - W(t0), int_t0^t (W - W(t0)) ds;
 * mode 1 / 2: out_w, out_k float32 / float64 (n - 1, batch, numel) = dW and dZ = int (W - W(t_q)) ds over
 * [t_q, t_q+1].  out_k may be NULL.  Returns 0, or -1 when a work buffer cannot be allocated. */
int sdekit_tree(uint32_t k0, uint32_t k1, const int64_t *index, int64_t batch, int64_t numel, int depth,
                double length, int64_t n, const int64_t *leaf, const double *r, const double *t, int64_t sq,
                int64_t sb, int mode, void *out_w, void *out_k, int threads) {
    tree_args a = {k0, k1, index, batch, numel, depth, length, n, leaf, r, t, sq, sb, mode, out_w, out_k};
    if (depth < 0 || depth > MAXLEV) return -1;
    int64_t blocks = (numel + TE - 1) / TE, total = batch * blocks;
    size_t ws_size = (size_t)(ARRAYS * (depth + 1) + SCRATCH) * TE * sizeof(double);
    int failed = 0;
    if (threads < 1 || batch * numel * n < TREE_PARALLEL_MIN) threads = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        double *ws = (double *)malloc(ws_size);
        if (ws == NULL) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            failed = 1;
        }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t task = 0; task < total; task++) {
            if (ws == NULL) continue;
            int64_t b = task / blocks, e0 = (task - b * blocks) * TE;
            int cnt = numel - e0 < TE ? (int)(numel - e0) : TE;
            tree_task(&a, b, e0, cnt, ws);
        }
        free(ws);
    }
    return failed ? -1 : 0;
}
