/* image.c - decode JPEG (TurboJPEG), PNG (libpng) and WebP (libwebp) from memory into 8-bit RGB.
 *
 * The goal is the pixels PIL gives for Image.open(f).convert('RGB') (what torchvision's loader and
 * timm's pipelines see), so the engine classifies exactly what the models were evaluated on:
 *   - greyscale, palette and low-bit PNGs expand the way PIL's modes 1/L/P do; alpha is dropped,
 *     not composited (PIL's RGBA->RGB conversion drops it too);
 *   - 16-bit PNGs keep the high byte of each sample (PIL's RGB;16B/RGBA;16B raw modes). PIL opens
 *     16-bit greyscale as mode 'I' and its I->RGB conversion clips every value above 255 to white,
 *     which no model was trained on; we take the high byte there too (same as for colour);
 *   - CMYK JPEGs are read with Adobe polarity (inverted, as Photoshop and PIL write them; PIL
 *     assumes it for every CMYK JPEG) and converted with PIL's integer cmyk2rgb formula;
 *   - EXIF orientation of JPEGs is applied like PIL's ImageOps.exif_transpose (optional).
 *
 * Hostile input: the format is sniffed from magic bytes; dimensions are read from the header and
 * checked against max_pixels before any pixel memory is allocated; a TurboJPEG warning (truncated
 * or corrupt data) is an error; libpng errors come back through longjmp into one cleanup path.
 */
#include "util.h"

#include <png.h>
#include <setjmp.h>
#include <string.h>
#include <turbojpeg.h>
#include <webp/decode.h>

/* Files larger than this are refused by lsq_image_load before being read. */
#define IMAGE_MAX_FILE_BYTES ((size_t)256 << 20)

typedef struct {
    int64_t max_pixels;
    int apply_exif;
    int dct_min_short; /* > 0: JPEGs may be DCT-scaled while their short side stays >= 2x this */
} decode_limits;

/* Check declared dimensions against the pixel limit; called before any pixel allocation. */
static lsq_status check_dims(const char *fmt, int64_t w, int64_t h, const decode_limits *lim, lsq_error *err)
{
    if (w <= 0 || h <= 0)
        return lsq_fail(err, LSQ_ERR_IMAGE, "%s header declares an empty image (%lld x %lld pixels)", fmt,
                        (long long)w, (long long)h);
    if (w > lim->max_pixels / h)
        return lsq_fail(err, LSQ_ERR_LIMIT,
                        "%s image of %lld x %lld pixels exceeds the limit of %lld pixels "
                        "(possible decompression bomb)",
                        fmt, (long long)w, (long long)h, (long long)lim->max_pixels);
    return LSQ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * EXIF orientation
 * ------------------------------------------------------------------------------------------- */

static unsigned rd16(const uint8_t *p, int big) { return big ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0]; }

static uint32_t rd32(const uint8_t *p, int big)
{
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Orientation tag (0x0112) of IFD0 in a TIFF block of n bytes; 1 when absent or malformed. Every
 * offset is checked against n: the block comes straight from the uploaded file. */
static int exif_tiff_orientation(const uint8_t *t, size_t n)
{
    if (n < 8) return 1;
    int big;
    if (t[0] == 'I' && t[1] == 'I') big = 0;
    else if (t[0] == 'M' && t[1] == 'M') big = 1;
    else return 1;
    if (rd16(t + 2, big) != 42) return 1;
    uint32_t ifd = rd32(t + 4, big);
    if (ifd > n - 2) return 1;
    unsigned count = rd16(t + ifd, big);
    size_t entries = ((size_t)n - ifd - 2) / 12;
    if (count > entries) count = (unsigned)entries; /* truncated IFD: read what is there */
    for (unsigned i = 0; i < count; i++) {
        const uint8_t *e = t + ifd + 2 + (size_t)i * 12;
        if (rd16(e, big) != 0x0112) continue;
        unsigned type = rd16(e + 2, big);
        uint32_t cnt = rd32(e + 4, big);
        uint32_t v;
        if (cnt != 1) return 1; /* PIL reads a tuple then, which exif_transpose ignores */
        if (type == 3) v = rd16(e + 8, big);       /* SHORT, the standard type */
        else if (type == 4) v = rd32(e + 8, big);  /* LONG, seen from sloppy writers */
        else return 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* Walk the JPEG markers before the first scan and read the orientation of the first APP1 "Exif"
 * segment (PIL keeps the first one too). Malformed structure means "no orientation". */
static int jpeg_exif_orientation(const uint8_t *d, size_t n)
{
    size_t pos = 2; /* after SOI */
    while (pos + 4 <= n) {
        if (d[pos] != 0xFF) return 1;
        unsigned marker = d[pos + 1];
        if (marker == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) { /* no length field */
            pos += 2;
            continue;
        }
        if (marker == 0xDA || marker == 0xD9) return 1; /* scan data or end: no EXIF before it */
        size_t len = rd16(d + pos + 2, 1);
        if (len < 2 || len > n - pos - 2) return 1;
        if (marker == 0xE1 && len >= 8 && memcmp(d + pos + 4, "Exif\0\0", 6) == 0)
            return exif_tiff_orientation(d + pos + 10, len - 8);
        pos += 2 + len;
    }
    return 1;
}

/* Return in *out a new buffer holding img transformed for EXIF orientation o (2..8), as PIL's
 * exif_transpose does: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
 * 7 transverse, 8 rotate 90 counter-clockwise. Orientations 5-8 swap width and height. */
static lsq_status apply_orientation(lsq_image *img, int o, lsq_error *err)
{
    const int w = img->width, h = img->height;
    const int swap = o >= 5;
    const int ow = swap ? h : w, oh = swap ? w : h;
    uint8_t *dst = malloc((size_t)w * h * 3);
    if (!dst) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory applying EXIF orientation (%d x %d)", w, h);
    /* Source pixel of destination (x, y) = base + x * dx + y * dy, in pixels of the source. */
    ptrdiff_t base, dx, dy;
    switch (o) {
    case 2: base = w - 1; dx = -1; dy = w; break;
    case 3: base = (ptrdiff_t)(h - 1) * w + w - 1; dx = -1; dy = -(ptrdiff_t)w; break;
    case 4: base = (ptrdiff_t)(h - 1) * w; dx = 1; dy = -(ptrdiff_t)w; break;
    case 5: base = 0; dx = w; dy = 1; break;
    case 6: base = (ptrdiff_t)(h - 1) * w; dx = -(ptrdiff_t)w; dy = 1; break;
    case 7: base = (ptrdiff_t)(h - 1) * w + w - 1; dx = -(ptrdiff_t)w; dy = -1; break;
    default: base = w - 1; dx = w; dy = -1; break; /* 8 */
    }
    const uint8_t *src = img->rgb;
    for (int y = 0; y < oh; y++) {
        const uint8_t *s = src + (base + y * dy) * 3;
        uint8_t *d = dst + (size_t)y * ow * 3;
        for (int x = 0; x < ow; x++, s += dx * 3, d += 3) {
            d[0] = s[0];
            d[1] = s[1];
            d[2] = s[2];
        }
    }
    free(img->rgb);
    img->rgb = dst;
    img->width = ow;
    img->height = oh;
    return LSQ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * JPEG
 * ------------------------------------------------------------------------------------------- */

/* CMYK samples as TurboJPEG returns them (raw, Adobe-inverted: 0 = full ink) to RGB, in place.
 * PIL unpacks these with "CMYK;I" (c' = 255 - c) and then applies cmyk2rgb:
 *     nk = 255 - k';  r = clip(nk - muldiv255(c', nk))  with muldiv255(a, b) = ((t >> 8) + t) >> 8,
 *     t = a * b + 128.  Since nk is the raw k, this is reproduced exactly below. */
static void cmyk_to_rgb_inplace(uint8_t *px, size_t npix)
{
    const uint8_t *s = px;
    uint8_t *d = px;
    for (size_t i = 0; i < npix; i++, s += 4, d += 3) {
        int nk = s[3];
        for (int c = 0; c < 3; c++) {
            int t = (255 - s[c]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            d[c] = (uint8_t)(v < 0 ? 0 : v);
        }
    }
}

static lsq_status decode_jpeg(const uint8_t *data, size_t size, const decode_limits *lim, lsq_image *out,
                              lsq_error *err)
{
    lsq_status st;
    uint8_t *px = NULL;
    tjhandle tj = tjInitDecompress();
    if (!tj) return lsq_fail(err, LSQ_ERR_NOMEM, "cannot create a TurboJPEG decompressor: %s", tjGetErrorStr2(NULL));

    int w = 0, h = 0, subsamp, cs;
    if (tjDecompressHeader3(tj, data, (unsigned long)size, &w, &h, &subsamp, &cs) != 0) {
        st = lsq_fail(err, LSQ_ERR_IMAGE, "corrupt JPEG header: %s", tjGetErrorStr2(tj));
        goto fail;
    }
    /* A stream that ends before its frame header reads as "tables only": success, no size. */
    if (w == 0 || h == 0) {
        st = lsq_fail(err, LSQ_ERR_IMAGE, "truncated JPEG: no frame header (%zu bytes)", size);
        goto fail;
    }
    if ((st = check_dims("JPEG", w, h, lim, err)) != LSQ_OK) goto fail;

    /* Optional DCT-domain reduction (lsq_image_decode_scaled): the largest of 1/8, 1/4, 1/2 that
     * keeps the short side >= 2x the resize target, so the PIL-style resize that follows still
     * antialiases a >= 2x reduction. It is not PIL's pixels: libjpeg's scaled IDCT low-passes
     * differently from PIL's filters. Measured against PIL + torchvision (224 crop of 256, bicubic),
     * in 8-bit levels: a photo upscaled to 2880x1908 (decoded at 1/2) mean |diff| 0.16, max 2, 84%
     * of values exact, 2x faster end to end; the same photo at 4320x2862 (1/4) mean 1.0, max 19,
     * 46% exact, 2.3x faster; a noisy synthetic 1600x1200 (1/2) mean 1.1, max 13. The dct_* cases
     * of tests/torch/test_preprocess.py print the current figures. */
    tjscalingfactor sf = {1, 1};
    if (lim->dct_min_short > 0) {
        static const int denoms[] = {8, 4, 2};
        for (size_t i = 0; i < LSQ_ARRAY_LEN(denoms); i++) {
            tjscalingfactor f = {1, denoms[i]};
            if ((int64_t)LSQ_MIN(TJSCALED(w, f), TJSCALED(h, f)) >= 2 * (int64_t)lim->dct_min_short) {
                sf = f;
                break;
            }
        }
    }
    const int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);

    /* TurboJPEG 2.1 decodes CMYK/YCCK only to CMYK; we convert those ourselves. */
    const int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    const int bpp = cmyk ? 4 : 3;
    px = malloc((size_t)sw * sh * bpp);
    if (!px) {
        st = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory for a %d x %d JPEG", sw, sh);
        goto fail;
    }
    /* STOPONWARNING: libjpeg reports truncated or corrupt entropy data only as a warning and would
     * return grey-filled pixels; LIMITSCANS caps progressive scans (a CPU-time bomb). ISLOW DCT and
     * fancy upsampling are TurboJPEG's defaults and what PIL's libjpeg uses, so pixels match. */
    const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
    if (tjDecompress2(tj, data, (unsigned long)size, px, sw, 0, sh, cmyk ? TJPF_CMYK : TJPF_RGB, flags) != 0) {
        if (tjGetErrorCode(tj) == TJERR_WARNING)
            st = lsq_fail(err, LSQ_ERR_IMAGE, "corrupt or truncated JPEG data: %s", tjGetErrorStr2(tj));
        else
            st = lsq_fail(err, LSQ_ERR_IMAGE, "cannot decode JPEG: %s", tjGetErrorStr2(tj));
        goto fail;
    }
    if (cmyk) {
        cmyk_to_rgb_inplace(px, (size_t)sw * sh);
        uint8_t *shrunk = realloc(px, (size_t)sw * sh * 3);
        if (shrunk) px = shrunk;
    }
    tjDestroy(tj);
    tj = NULL;

    out->width = sw;
    out->height = sh;
    out->rgb = px;
    px = NULL;
    if (lim->apply_exif) {
        int o = jpeg_exif_orientation(data, size);
        if (o != 1 && (st = apply_orientation(out, o, err)) != LSQ_OK) {
            lsq_image_free(out);
            return st;
        }
    }
    return LSQ_OK;

fail:
    free(px);
    if (tj) tjDestroy(tj);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * PNG
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *data;
    size_t size, pos;
    char msg[256]; /* libpng's error message, kept for our own */
} png_source;

static void png_read_cb(png_structp png, png_bytep dst, size_t n)
{
    png_source *s = png_get_io_ptr(png);
    if (n > s->size - s->pos) png_error(png, "file is truncated");
    memcpy(dst, s->data + s->pos, n);
    s->pos += n;
}

static void png_error_cb(png_structp png, png_const_charp msg)
{
    png_source *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings concern ancillary data (a bad iCCP profile, a text chunk's CRC); PIL ignores those too,
 * and libpng's default handler would print to stderr. */
static void png_warning_cb(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static lsq_status decode_png(const uint8_t *data, size_t size, const decode_limits *lim, lsq_image *out,
                             lsq_error *err)
{
    /* The signature is followed by IHDR: read the size ourselves so that a bomb is refused with
     * LSQ_ERR_LIMIT before libpng sees it (libpng's own limit is 1e6 x 1e6, an LSQ_ERR_IMAGE). */
    if (size < 33 || memcmp(data + 12, "IHDR", 4) != 0)
        return lsq_fail(err, LSQ_ERR_IMAGE, "corrupt PNG: missing IHDR chunk (%zu bytes)", size);
    lsq_status st = check_dims("PNG", rd32(data + 16, 1), rd32(data + 20, 1), lim, err);
    if (st != LSQ_OK) return st;

    png_source src = {.data = data, .size = size, .pos = 0, .msg = ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_error_cb, png_warning_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    /* Written after setjmp and read after longjmp: volatile, or the fail path may see a stale copy. */
    uint8_t *volatile px = NULL;
    volatile lsq_status vst = LSQ_OK;
    if (!png || !info) {
        vst = lsq_fail(err, LSQ_ERR_NOMEM, "cannot create a libpng decoder");
        goto fail;
    }
    png_set_read_fn(png, &src, png_read_cb);
    if (setjmp(png_jmpbuf(png))) {
        vst = lsq_fail(err, LSQ_ERR_IMAGE, "corrupt PNG: %s", src.msg);
        goto fail;
    }
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, color, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    if ((vst = check_dims("PNG", w, h, lim, err)) != LSQ_OK) goto fail;

    /* Reduce every PNG flavour to 8-bit RGB, as PIL's convert('RGB') does. tRNS is not expanded
     * and alpha is stripped: PIL drops transparency rather than compositing it. */
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (!(color & PNG_COLOR_MASK_COLOR) && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png); /* high byte, as PIL's ;16B raw modes */
    if (!(color & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != (size_t)w * 3) {
        vst = lsq_fail(err, LSQ_ERR_IMAGE, "unsupported PNG layout (colour type %d, %d bits)", color, depth);
        goto fail;
    }
    px = malloc((size_t)w * h * 3);
    if (!px) {
        vst = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory for a %u x %u PNG", (unsigned)w, (unsigned)h);
        goto fail;
    }
    /* Row by row into the final buffer: no row-pointer array (a 1 x 64M image would need 512 MB of
     * them). Interlaced images make several passes over the same rows. */
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++) png_read_row(png, px + (size_t)y * w * 3, NULL);
    /* Not png_read_end: data after the last row (or a missing IEND) is ignored, as PIL does. */
    png_destroy_read_struct(&png, &info, NULL);
    out->width = (int)w;
    out->height = (int)h;
    out->rgb = px;
    return LSQ_OK;

fail:
    free(px);
    if (png) png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    return vst;
}

/* ---------------------------------------------------------------------------------------------
 * WebP
 * ------------------------------------------------------------------------------------------- */

static const char *webp_status_name(VP8StatusCode s)
{
    switch (s) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data (truncated)";
    }
    return "unknown error";
}

static lsq_status decode_webp(const uint8_t *data, size_t size, const decode_limits *lim, lsq_image *out,
                              lsq_error *err)
{
    WebPBitstreamFeatures f;
    VP8StatusCode vs = WebPGetFeatures(data, size, &f);
    if (vs != VP8_STATUS_OK) return lsq_fail(err, LSQ_ERR_IMAGE, "corrupt WebP header: %s", webp_status_name(vs));
    if (f.has_animation) return lsq_fail(err, LSQ_ERR_IMAGE, "animated WebP is not supported");
    lsq_status st = check_dims("WebP", f.width, f.height, lim, err);
    if (st != LSQ_OK) return st;
    size_t bytes = (size_t)f.width * f.height * 3;
    uint8_t *px = malloc(bytes);
    if (!px) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory for a %d x %d WebP", f.width, f.height);
    /* Same libwebp, fancy upsampling and non-premultiplied output as PIL's decoder; alpha dropped. */
    if (!WebPDecodeRGBInto(data, size, px, bytes, f.width * 3)) {
        free(px);
        return lsq_fail(err, LSQ_ERR_IMAGE, "corrupt or truncated WebP data (%d x %d)", f.width, f.height);
    }
    out->width = f.width;
    out->height = f.height;
    out->rgb = px;
    return LSQ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Public entry points
 * ------------------------------------------------------------------------------------------- */

lsq_status lsq_image_decode(const void *data, size_t size, const lsq_image_options *opt, lsq_image *out,
                            lsq_error *err)
{
    return lsq_image_decode_scaled(data, size, opt, 0, out, err);
}

lsq_status lsq_image_decode_scaled(const void *data, size_t size, const lsq_image_options *opt, int resize_short,
                                   lsq_image *out, lsq_error *err)
{
    if (!out) return lsq_fail(err, LSQ_ERR_ARG, "lsq_image_decode: out is NULL");
    memset(out, 0, sizeof *out);
    if (!data && size) return lsq_fail(err, LSQ_ERR_ARG, "lsq_image_decode: data is NULL");
    decode_limits lim = {LSQ_DEFAULT_MAX_PIXELS, 1, resize_short > 0 ? resize_short : 0};
    if (opt) {
        if (opt->max_pixels > 0) lim.max_pixels = opt->max_pixels;
        lim.apply_exif = opt->apply_exif != 0;
    }
    const uint8_t *d = data;
    if (size == 0) return lsq_fail(err, LSQ_ERR_IMAGE, "empty image data (0 bytes)");
    if (size >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return decode_jpeg(d, size, &lim, out, err);
    if (size >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return decode_png(d, size, &lim, out, err);
    if (size >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0)
        return decode_webp(d, size, &lim, out, err);
    return lsq_fail(err, LSQ_ERR_IMAGE, "unrecognised image format (%zu bytes; expected JPEG, PNG or WebP)", size);
}

lsq_status lsq_image_load(const char *path, const lsq_image_options *opt, lsq_image *out, lsq_error *err)
{
    if (!out) return lsq_fail(err, LSQ_ERR_ARG, "lsq_image_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return lsq_fail(err, LSQ_ERR_ARG, "lsq_image_load: path is NULL");
    uint8_t *buf;
    size_t size;
    lsq_status st = lsq_read_file(path, IMAGE_MAX_FILE_BYTES, &buf, &size, err);
    if (st != LSQ_OK) return st;
    st = lsq_image_decode(buf, size, opt, out, err);
    free(buf);
    if (st != LSQ_OK && err) { /* name the file in the decoder's message */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        lsq_fail(err, st, "%s: %s", path, msg);
    }
    return st;
}

void lsq_image_free(lsq_image *img)
{
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}
