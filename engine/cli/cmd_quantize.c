/* cmd_quantize.c - `lsq quantize`: LSQ+ initialisation of an FP32 checkpoint on calibration images,
 * written as the packed deployable checkpoint (engine/src/calib.c does the work).
 *
 * Calibration images: a dataset as `lsq eval` reads it (IDX folder, class folders, labels.txt) or a
 * flat folder of images (labels are not needed). N images spread evenly over the set (item
 * floor(i * size / N)), preprocessed with the model's preprocessing at the calibration size. */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char quantize_help[] =
    "usage: lsq quantize --model FP32.safetensors --config wXaY[-lsq][+...] --calib DATA --out Q.safetensors\n"
    "                    [--init mse|minmax|lsq] [--calib-images N] [--size S] [--split train|test] [--arch A]\n"
    "LSQ+ initialisation in C: weight scales per output channel by mean +- 3 sigma (LSQ: 2 mean|w| / sqrt(p)),\n"
    "activation scale and offset by MSE search over the calibration images' activations (--init minmax for\n"
    "the min-max rule; -lsq configurations default to LSQ's 2 mean|x| / sqrt(p) with offset 0), exactly as\n"
    "models/lsqnet/quant.py calibrate() does with one image per batch. Writes the packed deployable form.\n"
    "DATA: an IDX folder (default split: train), one folder per class, images with a labels.txt, or a folder\n"
    "of images. --calib-images (default 256) are taken evenly spread over DATA. --size: calibration input\n"
    "size (default: the model's). Deterministic: the same inputs give a byte-identical file.\n"
    "--config suffixes (README 'Configurations'): +pt per-tensor weight scales, +fl<B> first/last layers at\n"
    "B bits, +dw<B> / +se<B> depthwise / SE layers at B bits, +<pattern>=<B> layers whose module name matches\n"
    "the fnmatch pattern at B bits; e.g. w2a2-lsq+pt+dw8, w4a4+fl6+blocks.*.se.*=8 (quote the '*').\n";

/* A flat folder of image files, sorted by name (the unlabelled form of DATA). */
static int list_images(const char *dir, char ***out, int *n)
{
    DIR *dp = opendir(dir);
    if (!dp) return -1;
    char **v = NULL;
    int cnt = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        struct stat st;
        if (!p) break;
        snprintf(p, len, "%s/%s", dir, e->d_name);
        if (stat(p, &st) || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        if (cnt == cap) {
            char **nv = realloc(v, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *v);
            if (!nv) {
                free(p);
                break;
            }
            v = nv;
        }
        v[cnt++] = p;
    }
    closedir(dp);
    for (int i = 1; i < cnt; i++) /* insertion sort: deterministic order whatever readdir returns */
        for (int j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
            char *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    *out = v;
    *n = cnt;
    return 0;
}

int cmd_quantize(int argc, char **argv)
{
    const char *model = NULL, *config = NULL, *data = NULL, *out = NULL, *init = NULL, *arch = NULL, *split = "train";
    long nimages = 256, size = 0;
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"config", 1, 0, 'c'},       {"calib", 1, 0, 'd'}, {"out", 1, 0, 'o'},
        {"init", 1, 0, 'i'},  {"calib-images", 1, 0, 'n'}, {"size", 1, 0, 's'},  {"split", 1, 0, 'p'},
        {"arch", 1, 0, 'a'},  {"help", 0, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'c': config = optarg; break;
        case 'd': data = optarg; break;
        case 'o': out = optarg; break;
        case 'a': arch = optarg; break;
        case 'i':
            if (strcmp(optarg, "mse") && strcmp(optarg, "minmax") && strcmp(optarg, "lsq"))
                return cli_usage("quantize", "--init is mse, minmax or lsq");
            init = optarg;
            break;
        case 'p':
            if (strcmp(optarg, "test") && strcmp(optarg, "train")) return cli_usage("quantize", "--split is test or train");
            split = optarg;
            break;
        case 'n':
            if (cli_parse_int(optarg, 1, 1000000, &nimages)) return cli_usage("quantize", "--calib-images must be 1..1000000");
            break;
        case 's':
            if (cli_parse_int(optarg, 32, 4096, &size)) return cli_usage("quantize", "--size must be 32..4096");
            break;
        case 'h': fputs(quantize_help, stdout); return 0;
        default: return cli_usage("quantize", "unknown option");
        }
    }
    if (!model || !config || !data || !out || optind != argc)
        return cli_usage("quantize", "--model, --config, --calib and --out are required");
    if (!strcmp(config, "fp32"))
        return cli_usage("quantize", "--config fp32 has nothing to quantize: name a quantized configuration "
                                     "(wXaY or wXaY-lsq, X and Y in 2..8, with + suffixes)");

    lsq_error err = {{0}};
    lsq_dataset *ds = NULL;
    char **files = NULL;
    int nfiles = 0, total, rc = 1;
    struct stat st;
    /* fail before minutes of calibration, not after: the output's folder must be writable */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", out);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else snprintf(dir, sizeof dir, ".");
    if (access(dir, W_OK) || (stat(out, &st) == 0 && S_ISDIR(st.st_mode)))
        return cli_error("quantize", "%s: cannot write the output (%s)", out,
                         access(dir, W_OK) ? "its folder is missing or not writable" : "it is a directory");
    if (stat(data, &st)) return cli_error("quantize", "%s: calibration data not found", data);
    if (!S_ISDIR(st.st_mode))
        return cli_error("quantize", "%s: calibration data must be a directory (IDX files, class folders, "
                                     "labels.txt or images)", data);
    if (lsq_dataset_open(data, split, &ds, &err)) {
        lsq_error derr = err;
        if (list_images(data, &files, &nfiles) || nfiles == 0)
            return cli_error("quantize", "%s", derr.msg);
        total = nfiles;
    } else {
        total = lsq_dataset_size(ds);
    }
    int n = nimages < total ? (int)nimages : total;
    lsq_calib *cal = NULL;
    float *x = NULL;
    lsq_calib_options co = {.config = config, .act_init = init, .arch = arch, .size = (int)size, .num_inputs = n};
    double t0 = cli_now_ms();
    if (lsq_calib_create(model, &co, &cal, &err)) {
        cli_error("quantize", "%s", err.msg);
        goto done;
    }
    const lsq_preprocess *pp = lsq_calib_preprocess(cal);
    int S = pp->input_size, tty = isatty(2);
    if (!(x = malloc((size_t)3 * S * S * sizeof(float)))) {
        cli_error("quantize", "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        int item = (int)((int64_t)i * total / n);
        lsq_image img = {0};
        lsq_status s = ds ? lsq_dataset_get(ds, item, &img, &err) : lsq_image_load(files[item], NULL, &img, &err);
        if (!s) s = lsq_image_preprocess(&img, pp, x, &err);
        lsq_image_free(&img);
        if (!s) s = lsq_calib_add(cal, x, &err);
        if (s) {
            cli_error("quantize", "calibration item %d: %s", item, err.msg);
            goto done;
        }
        if (tty && (i % 16 == 15 || i == n - 1)) fprintf(stderr, "\rcalibrating: %d/%d images", i + 1, n);
    }
    if (tty) fputc('\n', stderr);
    if (lsq_calib_write(cal, out, &err)) {
        cli_error("quantize", "%s", err.msg);
        goto done;
    }
    struct stat os;
    printf("%s: %s, %d calibration images of %d at %dx%d, written in %.1f s (%lld bytes)\n", out, config, n, total, S,
           S, (cli_now_ms() - t0) / 1e3, stat(out, &os) ? -1LL : (long long)os.st_size);
    rc = 0;
done:
    free(x);
    lsq_calib_free(cal);
    lsq_dataset_free(ds);
    for (int i = 0; i < nfiles; i++) free(files[i]);
    free(files);
    return rc;
}
