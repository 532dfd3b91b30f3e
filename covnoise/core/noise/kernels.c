/* Two CPU kernels of covnoise.core.noise, compiled on first use by covnoise.core.noise.compiled
 * and called through ctypes: covnoise_gaussian, N(0, 1) draws for gaussian.py (numpy's SFC64
 * stream and Box–Muller in one call), and covnoise_diag_std, the diagonal noise's scale from
 * its statistics in one pass (diag.py).
 *
 * The draw's numbers follow the numpy path of gaussian.py: for n entries and h = ceil(n/2) pairs,
 * the stream's next h 64-bit words are read as 2h little-endian 32-bit words w; pair i takes
 * m1 = the low 23 bits of w[i] and m2 = those of w[h + i], then
 *     u = (2 m1 + 1) 2^-24 in (0, 1),  r = sqrt(-2 ln u),  theta = 2 pi m2 2^-23,
 *     z[i] = r cos theta,  z[h + i] = r sin theta  (the last sine dropped when n is odd).
 * The numpy path rounds 2 pi (1 + m2 2^-23) to float32 before its sin and cos; here the
 * quarter turn is taken from m2's bits exactly and cos and sin are polynomials on
 * [-pi/4, pi/4] (the Cephes single-precision coefficients), and ln u comes from u's exponent
 * and a series in s = (x - 1)/(x + 1) on [sqrt(1/2), sqrt(2)]. The two paths agree to a few
 * float32 roundings (tests/test_gaussian.py checks both against float64 formulas of the same
 * words); everything here vectorises, with no calls into libm.
 */
#include <stdint.h>
#include <string.h>

float sqrtf(float); /* an instruction with -fno-math-errno */

/* numpy's SFC64 (Chris Doty-Humphrey's small fast counting generator): state a, b, c, w */
static inline uint64_t sfc64_next(uint64_t *s) {
    uint64_t a = s[0], b = s[1], c = s[2], w = s[3];
    uint64_t out = a + b + w;
    s[0] = b ^ (b >> 11);
    s[1] = c + (c << 3);
    s[2] = ((c << 24) | (c >> 40)) + out;
    s[3] = w + 1;
    return out;
}

static inline uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float float_of(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* sqrt(-2 ln u) for u = (2 m1 + 1) 2^-24, m1 the low 23 bits of w */
static inline float radius(uint32_t w) {
    float odd = (float)(int32_t)(((w & 0x007FFFFFu) << 1) | 1u); /* exact: below 2^24 */
    uint32_t b = bits_of(odd);
    int32_t e = (int32_t)(b >> 23) - 127 - 24;
    float x = float_of((b & 0x007FFFFFu) | 0x3F800000u); /* odd = x 2^(e + 24), x in [1, 2) */
    int32_t big = x > 1.41421356f;
    x = big ? 0.5f * x : x;
    e += big;
    float s = (x - 1.0f) / (x + 1.0f), s2 = s * s; /* |s| <= 0.1716 */
    float p = 0.11111111f; /* ln x = 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9 + ...) */
    p = p * s2 + 0.14285715f;
    p = p * s2 + 0.2f;
    p = p * s2 + 0.33333334f;
    p = p * s2 + 1.0f;
    float fe = (float)e; /* ln 2 split in two for an exact e ln 2 */
    float ln_u = fe * 0.693145751953125f + (fe * 1.428606765330187e-6f + 2.0f * s * p);
    return sqrtf(-2.0f * ln_u);
}

/* cos and sin of theta = 2 pi m2 2^-23, m2 the low 23 bits of w */
static inline void cos_sin(uint32_t w, float *c, float *s) {
    int32_t m = (int32_t)(w & 0x007FFFFFu);
    int32_t q = (m + (1 << 20)) >> 21; /* the nearest quarter turn, 0..4 */
    float a = (float)(m - q * (1 << 21)) * 7.490140565847157e-7f; /* times (pi/2) 2^-21 */
    float z = a * a;                                                /* |a| <= pi/4 */
    float sa = a + a * z * ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f);
    float ca = 1.0f - 0.5f * z
               + z * z * ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z
                          + 4.166664568298827e-2f);
    q &= 3;
    *c = q == 0 ? ca : q == 1 ? -sa : q == 2 ? -ca : sa;
    *s = q == 0 ? sa : q == 1 ? ca : q == 2 ? -sa : -ca;
}

/* Fill z[0..n) with N(0, 1) draws from the SFC64 state (a, b, c, w), which is advanced by
 * ceil(n/2) words; scratch holds 2 ceil(n/2) 32-bit words (each 64-bit word stored in native
 * byte order, as numpy's random_raw(h).view(uint32) reads it). */
void covnoise_gaussian(float *restrict z, int64_t n, uint64_t *restrict state,
                       uint32_t *restrict scratch) {
    if (n <= 0) return;
    int64_t h = (n + 1) / 2, m = n - h;
    uint64_t s[4];
    memcpy(s, state, sizeof s);
    for (int64_t i = 0; i < h; i++) {
        uint64_t w = sfc64_next(s);
        memcpy(scratch + 2 * i, &w, sizeof w);
    }
    memcpy(state, s, sizeof s);
    const uint32_t *restrict wu = scratch, *restrict wt = scratch + h;
    float *restrict zc = z, *restrict zs = z + h;
    for (int64_t i = 0; i < m; i++) {
        float r = radius(wu[i]), c, sn;
        cos_sin(wt[i], &c, &sn);
        zc[i] = r * c;
        zs[i] = r * sn;
    }
    if (m < h) { /* n odd: the last pair keeps its cosine */
        float c, sn;
        cos_sin(wt[m], &c, &sn);
        zc[m] = radius(wu[m]) * c;
    }
}

/* The diagonal noise's scale from its statistics in one pass: out = sqrt(max(a sq - ab s^2, 0))
 * (a NaN stays NaN), the same as DiagStats.std's four list operations in float32. */
void covnoise_diag_std(float *restrict out, const float *restrict sq, const float *restrict s,
                       int64_t n, float a, float ab) {
    if (n <= 0) return;
    for (int64_t i = 0; i < n; i++) {
        float v = a * sq[i] - ab * (s[i] * s[i]);
        out[i] = sqrtf(v < 0.0f ? 0.0f : v);
    }
}
