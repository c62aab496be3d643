/* preprocess.c - resize, center-crop and normalise a decoded image into the model's input tensor.
 *
 * The semantics are those of timm's eval transform on a PIL image, so that the engine sees the same
 * tensor PyTorch did:
 *     Resize(scale_size, interp)   shorter side -> scale_size, long side int(size * long / short)
 *     CenterCrop(input_size)       top = int(round((h - th) / 2.0)), zero padding when too small
 *     ToTensor, Normalize          x / 255, (x - mean) / std, all in float32
 * Resizing reproduces PIL's Image.resize: BILINEAR and BICUBIC are separable convolutions whose
 * support grows with the downscale factor (antialiasing), run horizontally then vertically in
 * 8-bit with 22-bit fixed-point weights and PIL's rounding; NEAREST is PIL's affine nearest
 * sampling with its accumulated source coordinate. Only the resized pixels inside the crop window
 * are computed: each output pixel depends only on its own row/column weights, so the result is
 * the same as resizing the whole image and cropping afterwards.
 */
#include "kernels/kernels.h"
#include "util.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#define PRE_MAX_INPUT_SIZE 8192   /* model inputs beyond this are a caller bug */
#define PRE_MAX_RESIZED (1 << 24) /* PIL passes sizes through float: exact below 2^24 */

/* PIL keeps 8 bits of result, 2 for overshoot of negative lobes and 22 for weights. */
#define PRE_PRECISION_BITS (32 - 8 - 2)

/* ---------------------------------------------------------------------------------------------
 * Resampling weights (PIL's precompute_coeffs + normalize_coeffs_8bpc)
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    int n;        /* outputs described */
    int ksize;    /* stride of k, >= every cnt */
    int *lo;      /* [n] first input index of each output */
    int *cnt;     /* [n] number of taps */
    int32_t *k;   /* [n * ksize] fixed-point weights, PRE_PRECISION_BITS fractional bits */
} resample_axis;

static double filter_bilinear(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double filter_bicubic(double x) /* Keys cubic, a = -0.5, as PIL */
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static void resample_axis_free(resample_axis *ax)
{
    free(ax->lo);
    free(ax->cnt);
    free(ax->k);
    memset(ax, 0, sizeof *ax);
}

/* Weights for outputs [first, first + n) of an in_size -> out_size resize. The arithmetic follows
 * PIL step by step (double centre and filter values, sum normalisation, round away from zero)
 * because a one-ulp difference in a weight can move a pixel by one level. */
static lsq_status resample_axis_init(resample_axis *ax, int in_size, int out_size, int first, int n,
                                     lsq_interp interp, lsq_error *err)
{
    memset(ax, 0, sizeof *ax);
    double (*filter)(double) = interp == LSQ_INTERP_BICUBIC ? filter_bicubic : filter_bilinear;
    const double fsupport = interp == LSQ_INTERP_BICUBIC ? 2.0 : 1.0;
    const double scale = (double)((float)in_size - 0.0f) / out_size; /* PIL's box is float */
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = fsupport * filterscale;
    const double ss = 1.0 / filterscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    size_t kbytes;
    double *w = NULL;
    if (lsq_mul_size((size_t)n * sizeof(int32_t), (size_t)ksize, &kbytes) != 0 ||
        !(w = malloc((size_t)ksize * sizeof *w)) || !(ax->lo = malloc((size_t)n * sizeof(int))) ||
        !(ax->cnt = malloc((size_t)n * sizeof(int))) || !(ax->k = calloc(1, kbytes))) {
        free(w);
        resample_axis_free(ax);
        return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory for resize weights (%d -> %d, %d taps)", in_size,
                        out_size, ksize);
    }
    ax->n = n;
    ax->ksize = ksize;
    for (int i = 0; i < n; i++) {
        const double center = (first + i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            w[x] = filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = ax->k + (size_t)i * ksize;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRE_PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRE_PRECISION_BITS));
        }
        ax->lo[i] = xmin;
        ax->cnt[i] = xmax;
    }
    free(w);
    return LSQ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Per-thread scratch: a server thread preprocesses image after image, and fresh buffers of a few
 * hundred KB per call came back from the kernel as page faults every time (glibc trims the heap
 * top after each free): a quarter of a 640x480 resize's time. So the crop window, the horizontal
 * pass and the grey plane live in buffers each thread keeps and grows, freed when it exits;
 * requests above SCRATCH_KEEP bytes (huge images) get a plain malloc, freed after the call.
 * ------------------------------------------------------------------------------------------- */

enum { SCRATCH_WINDOW, SCRATCH_HPASS, SCRATCH_LUMA, SCRATCH_SLOTS };
#define SCRATCH_KEEP ((size_t)16 << 20)

typedef struct {
    void *p[SCRATCH_SLOTS];
    size_t cap[SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t scratch_key;
static int scratch_key_ok;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_release(void *v)
{
    scratch_set *set = v;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(set->p[i]);
    free(set);
}

static void scratch_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_release) == 0; }

/* n bytes for slot; *owned = 1 when the caller must free() it (not kept), NULL when out of memory. */
static void *scratch_get(int slot, size_t n, int *owned)
{
    *owned = 0;
    if (n == 0) n = 1;
    pthread_once(&scratch_once, scratch_init);
    scratch_set *set = scratch_key_ok ? pthread_getspecific(scratch_key) : NULL;
    if (!set && n <= SCRATCH_KEEP && scratch_key_ok && (set = calloc(1, sizeof *set)) &&
        pthread_setspecific(scratch_key, set) != 0) {
        free(set);
        set = NULL;
    }
    if (!set || n > SCRATCH_KEEP) {
        *owned = 1;
        return malloc(n);
    }
    if (set->cap[slot] < n) {
        void *q = realloc(set->p[slot], n);
        if (!q) return NULL;
        set->p[slot] = q;
        set->cap[slot] = n;
    }
    return set->p[slot];
}

static inline uint8_t clip8(int32_t acc)
{
    int32_t v = acc >> PRE_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* ---------------------------------------------------------------------------------------------
 * Resampling passes (8-bit in, 8-bit out, C = 1 or 3 interleaved channels)
 * ------------------------------------------------------------------------------------------- */

/* AVX2 versions of the two passes: the same int32 products and sums in vector lanes, so the bytes
 * are identical; -O2 vectorises none of the plain loops. Horizontally, an RGB pixel takes 4 lanes
 * (one 4-byte load per tap, used where the byte after the last tap is still inside the row) and a
 * grey output's taps are a dot product 8 at a time; vertically, 8 columns of every tap stay in
 * registers. With the scratch buffers above, measured on this machine (Zen 5, one pinned thread):
 * a 640x480 photo to 224x224 RGB 2.2 -> 0.52 ms, a 1024x768 one to 32x32 grey 2.1 -> 0.56 ms. */
__attribute__((target("avx2"))) static inline uint32_t clip8x4_avx2(__m128i a)
{
    __m128i v = _mm_srai_epi32(a, PRE_PRECISION_BITS);
    v = _mm_packus_epi16(_mm_packs_epi32(v, v), v); /* saturating: < 0 -> 0, > 255 -> 255 */
    return (uint32_t)_mm_cvtsi128_si32(v);
}

__attribute__((target("avx2"))) static int resample_row3_avx2(const uint8_t *restrict s, int in_w,
                                                             const resample_axis *ax, uint8_t *restrict d)
{
    const __m128i half = _mm_set1_epi32(1 << (PRE_PRECISION_BITS - 1));
    int j = 0;
    for (; j < ax->n && ax->lo[j] + ax->cnt[j] < in_w; j++) {
        const uint8_t *p = s + (size_t)ax->lo[j] * 3;
        const int32_t *k = ax->k + (size_t)j * ax->ksize;
        __m128i a = half;
        for (int t = 0, n = ax->cnt[j]; t < n; t++, p += 3) {
            int32_t px;
            memcpy(&px, p, 4);
            a = _mm_add_epi32(a, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(px)), _mm_set1_epi32(k[t])));
        }
        uint32_t rgbx = clip8x4_avx2(a);
        memcpy(d + 3 * j, &rgbx, 3);
    }
    return j; /* the outputs left, whose taps reach the row's last pixel, go the scalar way */
}

/* One grey output: the taps' dot product, 8 at a time (a long one when downscaling a photo to a
 * small model input: 64 taps per output from 1024 to 32 pixels). */
__attribute__((target("avx2"))) static int32_t resample_dot1_avx2(const uint8_t *p, const int32_t *k, int n)
{
    __m256i a = _mm256_setzero_si256();
    int t = 0;
    for (; t + 8 <= n; t += 8)
        a = _mm256_add_epi32(a, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + t))),
                                                   _mm256_loadu_si256((const __m256i *)(k + t))));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
    int32_t acc = _mm_cvtsi128_si32(h); /* int32 sums wrap the same in any order */
    for (; t < n; t++) acc += p[t] * k[t];
    return acc;
}

__attribute__((target("avx2"))) static size_t resample_cols_avx2(const uint8_t *restrict s0, size_t sstride,
                                                                const int32_t *k, int cnt, size_t width,
                                                                uint8_t *restrict d)
{
    const __m256i half = _mm256_set1_epi32(1 << (PRE_PRECISION_BITS - 1));
    size_t q = 0;
    for (; q + 8 <= width; q += 8) {
        __m256i a = half;
        for (int t = 0; t < cnt; t++) {
            __m128i b = _mm_loadl_epi64((const __m128i *)(s0 + (size_t)t * sstride + q));
            a = _mm256_add_epi32(a, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(k[t])));
        }
        __m256i v = _mm256_srai_epi32(a, PRE_PRECISION_BITS);
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storel_epi64((__m128i *)(d + q), _mm_packus_epi16(w, w));
    }
    return q;
}

/* The AVX2 passes where the kernel level (CPU, capped by LSQ_ISA: tests run both ways) has AVX2. */
static int have_avx2(void) { return lsq_kernels_best() != &lsq_kernels_scalar; }

/* rows of src (stride sstride bytes) -> rows of dst (ax->n pixels each, packed). */
static void resample_horizontal(const uint8_t *restrict src, size_t sstride, int in_w, int rows, int C,
                                const resample_axis *ax, uint8_t *restrict dst)
{
    const int32_t half = 1 << (PRE_PRECISION_BITS - 1);
    const int avx2 = have_avx2();
    for (int y = 0; y < rows; y++) {
        const uint8_t *s = src + (size_t)y * sstride;
        uint8_t *d = dst + (size_t)y * ax->n * C;
        if (C == 3) {
            int j0 = avx2 ? resample_row3_avx2(s, in_w, ax, d) : 0;
            for (int j = j0; j < ax->n; j++) {
                const uint8_t *p = s + (size_t)ax->lo[j] * 3;
                const int32_t *k = ax->k + (size_t)j * ax->ksize;
                int32_t a0 = half, a1 = half, a2 = half;
                for (int t = 0, n = ax->cnt[j]; t < n; t++, p += 3) {
                    a0 += p[0] * k[t];
                    a1 += p[1] * k[t];
                    a2 += p[2] * k[t];
                }
                d[3 * j + 0] = clip8(a0);
                d[3 * j + 1] = clip8(a1);
                d[3 * j + 2] = clip8(a2);
            }
        } else {
            for (int j = 0; j < ax->n; j++) {
                const uint8_t *p = s + ax->lo[j];
                const int32_t *k = ax->k + (size_t)j * ax->ksize;
                if (avx2) {
                    d[j] = clip8(half + resample_dot1_avx2(p, k, ax->cnt[j]));
                    continue;
                }
                int32_t a0 = half;
                for (int t = 0, n = ax->cnt[j]; t < n; t++) a0 += p[t] * k[t];
                d[j] = clip8(a0);
            }
        }
    }
}

/* Output row i = weighted sum of src rows ax->lo[i] - row0 ...; width bytes per row. acc is
 * scratch of width int32. The loop over a row is contiguous and vectorises. */
static void resample_vertical(const uint8_t *restrict src, size_t sstride, int row0, size_t width,
                              const resample_axis *ax, int32_t *restrict acc, uint8_t *restrict dst)
{
    const int32_t half = 1 << (PRE_PRECISION_BITS - 1);
    const int avx2 = have_avx2();
    for (int i = 0; i < ax->n; i++) {
        const int32_t *k = ax->k + (size_t)i * ax->ksize;
        const uint8_t *s0 = src + (size_t)(ax->lo[i] - row0) * sstride;
        uint8_t *d = dst + (size_t)i * width;
        const size_t q0 = avx2 ? resample_cols_avx2(s0, sstride, k, ax->cnt[i], width, d) : 0;
        for (size_t q = q0; q < width; q++) acc[q] = half;
        for (int t = 0; t < ax->cnt[i]; t++) {
            const uint8_t *s = s0 + (size_t)t * sstride;
            const int32_t kt = k[t];
            for (size_t q = q0; q < width; q++) acc[q] += s[q] * kt;
        }
        for (size_t q = q0; q < width; q++) d[q] = clip8(acc[q]);
    }
}

/* PIL's NEAREST (ImagingScaleAffine): the source coordinate starts at scale / 2 and is advanced by
 * repeated addition, so rounding drift is part of the result; tabulate it the same way for the
 * outputs [first, first + n). -1 marks a source index outside the image (PIL leaves those 0). */
static void nearest_table(int in_size, int out_size, int first, int n, int *tab)
{
    const double a = (double)((float)in_size - 0.0f) / out_size;
    double xo = 0.0 + a * 0.5;
    for (int x = 0; x < first + n; x++, xo += a) {
        if (x < first) continue;
        int xin = xo < 0.0 ? -1 : (int)xo;
        tab[x - first] = xin < in_size ? xin : -1;
    }
}

/* The crop window [cx0, cx0 + ncols) x [cy0, cy0 + nrows) of plane (w x h x C) resized to rw x rh,
 * into win (nrows x ncols x C). */
static lsq_status resize_window(const uint8_t *plane, int w, int h, int C, int rw, int rh, int cx0, int ncols,
                                int cy0, int nrows, lsq_interp interp, uint8_t *win, lsq_error *err)
{
    lsq_status st = LSQ_OK;
    const size_t sstride = (size_t)w * C, wrow = (size_t)ncols * C;
    resample_axis hx = {0}, vy = {0};
    uint8_t *tmp = NULL;
    int tmp_owned = 0;
    int32_t *acc = NULL;
    int *xtab = NULL, *ytab = NULL;

    if (rw == w && rh == h) { /* torchvision skips the resize: a plain crop */
        for (int i = 0; i < nrows; i++) memcpy(win + i * wrow, plane + (size_t)(cy0 + i) * sstride + (size_t)cx0 * C, wrow);
        return LSQ_OK;
    }
    if (interp == LSQ_INTERP_NEAREST) {
        if (!(xtab = malloc((size_t)ncols * sizeof *xtab)) || !(ytab = malloc((size_t)nrows * sizeof *ytab))) {
            st = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory for the nearest-neighbour tables");
            goto fail;
        }
        nearest_table(w, rw, cx0, ncols, xtab);
        nearest_table(h, rh, cy0, nrows, ytab);
        for (int i = 0; i < nrows; i++) {
            uint8_t *d = win + i * wrow;
            if (ytab[i] < 0) {
                memset(d, 0, wrow);
                continue;
            }
            const uint8_t *s = plane + (size_t)ytab[i] * sstride;
            for (int j = 0; j < ncols; j++)
                for (int c = 0; c < C; c++) d[j * C + c] = xtab[j] < 0 ? 0 : s[(size_t)xtab[j] * C + c];
        }
        goto done;
    }

    /* PIL skips a pass whose size does not change (it would be the identity anyway). */
    const int need_h = rw != w, need_v = rh != h;
    int ya = cy0, yb = cy0 + nrows; /* source rows the vertical pass reads */
    if (need_v) {
        if ((st = resample_axis_init(&vy, h, rh, cy0, nrows, interp, err)) != LSQ_OK) goto fail;
        ya = vy.lo[0];
        yb = vy.lo[0] + vy.cnt[0];
        for (int i = 1; i < nrows; i++) {
            ya = LSQ_MIN(ya, vy.lo[i]);
            yb = LSQ_MAX(yb, vy.lo[i] + vy.cnt[i]);
        }
    }
    const uint8_t *src = plane + (size_t)cx0 * C; /* used when need_h == 0, then rw == w */
    size_t stride = sstride;
    int row0 = 0;
    if (need_h) {
        if ((st = resample_axis_init(&hx, w, rw, cx0, ncols, interp, err)) != LSQ_OK) goto fail;
        size_t bytes;
        if (lsq_mul_size((size_t)(yb - ya), wrow, &bytes) != 0 || !(tmp = scratch_get(SCRATCH_HPASS, bytes, &tmp_owned))) {
            st = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory for the horizontal resize pass (%d rows)", yb - ya);
            goto fail;
        }
        resample_horizontal(plane + (size_t)ya * sstride, sstride, w, yb - ya, C, &hx, tmp);
        src = tmp;
        stride = wrow;
        row0 = ya;
    }
    if (need_v) {
        if (!(acc = malloc(wrow * sizeof *acc))) {
            st = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory for the vertical resize pass");
            goto fail;
        }
        resample_vertical(src, stride, row0, wrow, &vy, acc, win);
    } else {
        for (int i = 0; i < nrows; i++) memcpy(win + i * wrow, src + (size_t)(cy0 + i - row0) * stride, wrow);
    }

done:
fail:
    resample_axis_free(&hx);
    resample_axis_free(&vy);
    if (tmp_owned) free(tmp);
    free(acc);
    free(xtab);
    free(ytab);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Geometry (timm / torchvision)
 * ------------------------------------------------------------------------------------------- */

/* timm: scale_size = math.floor(img_size / crop_pct), in double. crop_pct arrives as a float
 * (0.8f = 0.800000011920929), which would make 224 / 0.8 = 279.99999 -> 279 where Python gets 280:
 * recover the decimal value first (crop percentages have at most 6 decimals). */
static int scale_size(int input_size, float crop_pct)
{
    double c = round((double)crop_pct * 1e6) / 1e6;
    return (int)floor(input_size / c);
}

/* Start of a center crop of `crop` out of `size`, as torchvision: int(round((size - crop) / 2.0))
 * with Python's round-half-to-even; when size < crop the image is padded by (crop - size) // 2 on
 * the leading side, which is a negative start. */
static int crop_start(int size, int crop)
{
    if (crop > size) return -((crop - size) / 2);
    int d = size - crop, q = d / 2;
    if ((d & 1) && (q & 1)) q++; /* q + 0.5 rounds to the even neighbour */
    return q;
}

/* PIL 'L': ITU-R 601-2 luma with PIL's 16-bit fixed-point weights (19595 + 38470 + 7471 = 65536). */
#define LUMA_LOOP(rgb, npix, l)                                                                              \
    for (size_t i = 0; i < (npix); i++)                                                                       \
        (l)[i] = (uint8_t)(((rgb)[3 * i] * 19595 + (rgb)[3 * i + 1] * 38470 + (rgb)[3 * i + 2] * 7471 + 0x8000) >> 16)

/* The same loop, vectorised by the compiler for AVX2 (-O2 leaves the plain one scalar). */
__attribute__((target("avx2"), optimize("O3"))) static void rgb_to_luma_avx2(const uint8_t *restrict rgb, size_t npix,
                                                                             uint8_t *restrict l)
{
    LUMA_LOOP(rgb, npix, l);
}

static void rgb_to_luma(const uint8_t *restrict rgb, size_t npix, uint8_t *restrict l)
{
    if (have_avx2()) {
        rgb_to_luma_avx2(rgb, npix, l);
        return;
    }
    LUMA_LOOP(rgb, npix, l);
}

/* ---------------------------------------------------------------------------------------------
 * Public entry points
 * ------------------------------------------------------------------------------------------- */

int lsq_preprocess_resize_size(const lsq_preprocess *p)
{
    if (!p) return 0;
    if (p->resize_size > 0) return p->resize_size;
    if (p->input_size <= 0 || !(p->crop_pct > 0.0f && p->crop_pct <= 8.0f)) return 0;
    return scale_size(p->input_size, p->crop_pct);
}

lsq_status lsq_image_preprocess(const lsq_image *img, const lsq_preprocess *p, float *out, lsq_error *err)
{
    if (!img || !p || !out) return lsq_fail(err, LSQ_ERR_ARG, "lsq_image_preprocess: NULL argument");
    if (!img->rgb || img->width <= 0 || img->height <= 0)
        return lsq_fail(err, LSQ_ERR_ARG, "lsq_image_preprocess: empty image (%d x %d)", img->width, img->height);
    const int S = p->input_size;
    if (S <= 0 || S > PRE_MAX_INPUT_SIZE)
        return lsq_fail(err, LSQ_ERR_ARG, "preprocess: input_size %d is outside 1..%d", S, PRE_MAX_INPUT_SIZE);
    if (p->interp != LSQ_INTERP_BILINEAR && p->interp != LSQ_INTERP_BICUBIC && p->interp != LSQ_INTERP_NEAREST)
        return lsq_fail(err, LSQ_ERR_ARG, "preprocess: unknown interpolation %d", (int)p->interp);
    for (int c = 0; c < 3; c++)
        if (!isfinite(p->mean[c]) || !isfinite(p->std[c]) || p->std[c] == 0.0f)
            return lsq_fail(err, LSQ_ERR_ARG, "preprocess: mean[%d] = %g, std[%d] = %g (std must be finite and non-zero)",
                            c, p->mean[c], c, p->std[c]);
    if (p->resize_size <= 0 && !(p->crop_pct > 0.0f && p->crop_pct <= 8.0f))
        return lsq_fail(err, LSQ_ERR_ARG, "preprocess: crop_pct %g is outside (0, 8]", p->crop_pct);
    const int target = lsq_preprocess_resize_size(p);
    if (target < 1 || target > PRE_MAX_RESIZED)
        return lsq_fail(err, LSQ_ERR_ARG, "preprocess: resize size %d is outside 1..%d", target, PRE_MAX_RESIZED);

    /* torchvision Resize(int): the short side becomes target, long = int(target * long / short)
     * (exact product, correctly rounded division, truncation: the same in double). */
    const int w = img->width, h = img->height;
    const int shrt = LSQ_MIN(w, h), lng = LSQ_MAX(w, h);
    const double lng_d = (double)((int64_t)target * lng) / shrt;
    if (lng_d >= PRE_MAX_RESIZED)
        return lsq_fail(err, LSQ_ERR_LIMIT, "preprocess: a %d x %d image resized to short side %d is too elongated",
                        w, h, target);
    const int rw = w <= h ? target : (int)lng_d;
    const int rh = w <= h ? (int)lng_d : target;

    const int left = crop_start(rw, S), top = crop_start(rh, S);
    const int cx0 = LSQ_MAX(0, left), cx1 = LSQ_MIN(rw, left + S);
    const int cy0 = LSQ_MAX(0, top), cy1 = LSQ_MIN(rh, top + S);
    const int ncols = cx1 - cx0, nrows = cy1 - cy0;
    LSQ_ASSERT(ncols > 0 && nrows > 0);

    lsq_status st = LSQ_OK;
    uint8_t *luma = NULL, *win = NULL;
    int luma_owned = 0, win_owned = 0;
    const uint8_t *plane = img->rgb;
    int C = 3;
    if (p->grayscale) { /* convert first, as PIL's convert('L') precedes the transform */
        if (!(luma = scratch_get(SCRATCH_LUMA, (size_t)w * h, &luma_owned))) {
            st = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory converting a %d x %d image to greyscale", w, h);
            goto fail;
        }
        rgb_to_luma(img->rgb, (size_t)w * h, luma);
        plane = luma;
        C = 1;
    }
    if (!(win = scratch_get(SCRATCH_WINDOW, (size_t)ncols * nrows * C, &win_owned))) {
        st = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory for a %d x %d crop", ncols, nrows);
        goto fail;
    }
    if ((st = resize_window(plane, w, h, C, rw, rh, cx0, ncols, cy0, nrows, p->interp, win, err)) != LSQ_OK)
        goto fail;

    /* ToTensor + Normalize in float32, in torch's order (x / 255, - mean, / std): through a table
     * this is bit-identical and costs one load per value. Padding is pixel value 0. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - p->mean[c]) / p->std[c];
    for (int c = 0; c < 3; c++) {
        const float *l = lut[c];
        const int ch = C == 3 ? c : 0;
        float *o = out + (size_t)c * S * S;
        for (int y = 0; y < S; y++, o += S) {
            const int ry = top + y;
            if (ry < cy0 || ry >= cy1) {
                for (int x = 0; x < S; x++) o[x] = l[0];
                continue;
            }
            const uint8_t *row = win + (size_t)(ry - cy0) * ncols * C + ch;
            const int xa = cx0 - left, xb = cx1 - left; /* output columns with pixels */
            for (int x = 0; x < xa; x++) o[x] = l[0];
            for (int x = xa; x < xb; x++) o[x] = l[row[(size_t)(x - xa) * C]];
            for (int x = xb; x < S; x++) o[x] = l[0];
        }
    }

fail:
    if (luma_owned) free(luma);
    if (win_owned) free(win);
    return st;
}
