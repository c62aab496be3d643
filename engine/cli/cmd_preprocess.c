/* cmd_preprocess.c - `lsq preprocess`: decode an image and write the model input tensor it becomes
 * (raw float32 NCHW [1, 3, S, S], native byte order), for comparing with PyTorch and for debugging.
 *
 * The preprocessing starts from a base (timm's ImageNet defaults) and applies only the flags given
 * on the command line, so that a base taken from a model's checkpoint can slot in the same way. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char preprocess_usage[] =
    "usage: lsq preprocess IMAGE --output X.f32 [options]\n"
    "  --output PATH        raw float32 NCHW [1,3,S,S] tensor to write\n  --model M            take the preprocessing from checkpoint M's metadata (flags override)\n"
    "  --size N             model input size S (default 224)\n"
    "  --resize R           shorter side after resize (default floor(S / crop_pct))\n"
    "  --crop-pct P         crop fraction (default 0.875)\n"
    "  --interp MODE        bilinear | bicubic | nearest (default bicubic)\n"
    "  --mean a,b,c         per-channel mean (default 0.485,0.456,0.406)\n"
    "  --std a,b,c          per-channel std (default 0.229,0.224,0.225)\n"
    "  --gray               convert to luma (PIL 'L') and replicate to 3 channels\n"
    "  --no-exif            ignore EXIF orientation\n"
    "  --dct-scale          let large JPEGs decode at 1/2, 1/4 or 1/8 scale (faster, not PIL-exact)\n";

/* Flags given on the command line; has_* say which fields override the base. */
typedef struct {
    const char *image, *output, *model;
    int has_size, has_resize, has_crop_pct, has_interp, has_mean, has_std, has_gray;
    lsq_preprocess v;
    int no_exif, dct_scale;
} preprocess_args;

static void preprocess_defaults(lsq_preprocess *p)
{
    *p = (lsq_preprocess){
        .input_size = 224,
        .resize_size = 0,
        .crop_pct = 0.875f,
        .interp = LSQ_INTERP_BICUBIC,
        .mean = {0.485f, 0.456f, 0.406f},
        .std = {0.229f, 0.224f, 0.225f},
        .grayscale = 0,
    };
}

static void preprocess_apply(lsq_preprocess *p, const preprocess_args *a)
{
    if (a->has_size) p->input_size = a->v.input_size;
    if (a->has_resize) p->resize_size = a->v.resize_size;
    if (a->has_crop_pct) {
        p->crop_pct = a->v.crop_pct;
        if (!a->has_resize) p->resize_size = 0; /* derive the resize from the new crop_pct */
    }
    if (a->has_interp) p->interp = a->v.interp;
    if (a->has_mean) memcpy(p->mean, a->v.mean, sizeof p->mean);
    if (a->has_std) memcpy(p->std, a->v.std, sizeof p->std);
    if (a->has_gray) p->grayscale = 1;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = (float)v;
    return 0;
}

static int parse_triple(const char *s, float out[3])
{
    char buf[128];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    char *save = NULL, *tok = strtok_r(buf, ",", &save);
    for (int i = 0; i < 3; i++, tok = strtok_r(NULL, ",", &save))
        if (!tok || parse_float(tok, &out[i]) != 0) return -1;
    return tok ? -1 : 0;
}

/* Returns 0 when parsed, 2 on a usage error (message printed), -1 for --help. */
static int parse_args(int argc, char **argv, preprocess_args *a)
{
    enum { OPT_MODEL = 255, OPT_SIZE = 256, OPT_RESIZE, OPT_CROP, OPT_INTERP, OPT_MEAN, OPT_STD, OPT_GRAY, OPT_NO_EXIF, OPT_DCT };
    static const struct option opts[] = {
        {"output", 1, 0, 'o'},     {"size", 1, 0, OPT_SIZE},      {"resize", 1, 0, OPT_RESIZE},
        {"crop-pct", 1, 0, OPT_CROP}, {"interp", 1, 0, OPT_INTERP}, {"mean", 1, 0, OPT_MEAN},
        {"std", 1, 0, OPT_STD},    {"gray", 0, 0, OPT_GRAY},      {"no-exif", 0, 0, OPT_NO_EXIF},
        {"dct-scale", 0, 0, OPT_DCT}, {"model", 1, 0, OPT_MODEL}, {"help", 0, 0, 'h'},         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    int c, idx = -1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, &idx)) != -1) {
        long v = 0;
        int bad = 0;
        switch (c) {
        case 'o': a->output = optarg; break;
        case OPT_SIZE:
            bad = cli_parse_int(optarg, 1, 8192, &v);
            a->v.input_size = (int)v, a->has_size = 1;
            break;
        case OPT_RESIZE:
            bad = cli_parse_int(optarg, 1, 1 << 20, &v);
            a->v.resize_size = (int)v, a->has_resize = 1;
            break;
        case OPT_CROP:
            bad = parse_float(optarg, &a->v.crop_pct) || !(a->v.crop_pct > 0.0f && a->v.crop_pct <= 8.0f);
            a->has_crop_pct = 1;
            break;
        case OPT_INTERP:
            a->has_interp = 1;
            if (!strcmp(optarg, "bilinear")) a->v.interp = LSQ_INTERP_BILINEAR;
            else if (!strcmp(optarg, "bicubic")) a->v.interp = LSQ_INTERP_BICUBIC;
            else if (!strcmp(optarg, "nearest")) a->v.interp = LSQ_INTERP_NEAREST;
            else bad = 1;
            break;
        case OPT_MEAN: bad = parse_triple(optarg, a->v.mean), a->has_mean = 1; break;
        case OPT_STD:
            bad = parse_triple(optarg, a->v.std) || !a->v.std[0] || !a->v.std[1] || !a->v.std[2];
            a->has_std = 1;
            break;
        case OPT_GRAY: a->has_gray = 1; break;
        case OPT_NO_EXIF: a->no_exif = 1; break;
        case OPT_DCT: a->dct_scale = 1; break;
        case OPT_MODEL: a->model = optarg; break;
        case 'h': return -1;
        default: return cli_usage("preprocess", "unknown option");
        }
        if (bad) return cli_usage("preprocess", "invalid value '%s' for --%s", optarg, opts[idx].name);
        idx = -1;
    }
    if (optind != argc - 1)
        return cli_usage("preprocess", optind >= argc ? "IMAGE is required" : "exactly one IMAGE expected");
    a->image = argv[optind];
    if (!a->output) return cli_usage("preprocess", "--output is required");
    return 0;
}

/* The whole file in a malloc'd buffer; a message on stderr and NULL on failure. */
static uint8_t *read_image_file(const char *path, size_t *size)
{
    const size_t max_bytes = (size_t)256 << 20;
    uint8_t *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error("preprocess", "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    off_t n = fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) ? sb.st_size : -1;
    if (n < 0) {
        cli_error("preprocess", "%s: not a regular file", path);
    } else if ((uint64_t)n > max_bytes) {
        cli_error("preprocess", "%s: %lld bytes exceeds the limit of %zu", path, (long long)n, max_bytes);
    } else if (!(buf = malloc(n ? (size_t)n : 1))) {
        cli_error("preprocess", "%s: out of memory", path);
    } else if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        cli_error("preprocess", "%s: short read", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)(n > 0 ? n : 0);
    return buf;
}

int cmd_preprocess(int argc, char **argv)
{
    preprocess_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc < 0) {
        fputs(preprocess_usage, stdout);
        return 0;
    }
    if (rc) return rc;

    lsq_preprocess pre;
    preprocess_defaults(&pre);
    if (a.model) { /* the checkpoint's own preprocessing; flags still override it */
        lsq_model *m = cli_load_model("preprocess", a.model, NULL, NULL);
        if (!m) return 1;
        pre = *lsq_model_preprocess(m);
        lsq_model_free(m);
    }
    preprocess_apply(&pre, &a);

    lsq_error err = {{0}};
    lsq_image img = {0};
    float *tensor = NULL;
    FILE *f = NULL;
    size_t size = 0;
    uint8_t *data = read_image_file(a.image, &size);
    rc = 1;
    if (!data) goto done;
    lsq_image_options opt = {.max_pixels = 0, .apply_exif = !a.no_exif};
    const int dct_short = a.dct_scale ? lsq_preprocess_resize_size(&pre) : 0;
    lsq_status st = lsq_image_decode_scaled(data, size, &opt, dct_short, &img, &err);
    if (st != LSQ_OK) {
        cli_error("preprocess", "%s: %s", a.image, err.msg);
        goto done;
    }
    const size_t n = (size_t)3 * pre.input_size * pre.input_size;
    if (!(tensor = malloc(n * sizeof *tensor))) {
        cli_error("preprocess", "out of memory");
        goto done;
    }
    if ((st = lsq_image_preprocess(&img, &pre, tensor, &err)) != LSQ_OK) {
        cli_error("preprocess", "%s: %s", a.image, err.msg);
        goto done;
    }
    if (!(f = fopen(a.output, "wb"))) {
        cli_error("preprocess", "%s: %s", a.output, strerror(errno));
        goto done;
    }
    if (fwrite(tensor, sizeof *tensor, n, f) != n) {
        cli_error("preprocess", "%s: write failed: %s", a.output, strerror(errno));
        goto done;
    }
    if (fclose(f) != 0) {
        f = NULL;
        cli_error("preprocess", "%s: %s", a.output, strerror(errno));
        goto done;
    }
    f = NULL;
    rc = 0;

done:
    if (f) fclose(f);
    free(data);
    free(tensor);
    lsq_image_free(&img);
    return rc;
}
