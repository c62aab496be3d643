/* cmd_run.c - `lsq infer` (raw tensors in and out) and `lsq classify` (images to labels). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ==== lsq infer ================================================================================ */

static const char infer_help[] =
    "usage: lsq infer --model M.safetensors [--arch A] [--config C] --input X.f32 --shape N,3,H,W\n"
    "                 --output Y.f32 [--threads T] [--reference] [--trace FILE]\n"
    "Raw little-endian float32 NCHW input (already normalised) in, float32 logits [N, classes] out.\n"
    "Quantized models run on the integer path; --reference runs the float reference path instead.\n"
    "--trace FILE writes every quantized activation tensor of every input, in network order, as records\n"
    "  u32 name length, name, u64 n, n int32 codes, u8 has_u, and if has_u n float32 values before\n"
    "  rounding (the reference path only); all little-endian.\n";

/* lsq_trace_fn writing the records described in infer_help. */
static void trace_write(void *user, const char *layer, const int32_t *codes, const float *u, size_t n)
{
    FILE *f = user;
    uint32_t len = (uint32_t)strlen(layer);
    uint64_t n64 = n;
    uint8_t has_u = u != NULL;
    fwrite(&len, 4, 1, f);
    fwrite(layer, 1, len, f);
    fwrite(&n64, 8, 1, f);
    fwrite(codes, 4, n, f);
    fwrite(&has_u, 1, 1, f);
    if (u) fwrite(u, 4, n, f);
}

int cmd_infer(int argc, char **argv)
{
    const char *model = NULL, *arch = NULL, *config = NULL, *in_path = NULL, *out_path = NULL, *shape = NULL;
    const char *trace_path = NULL;
    long threads = 1;
    int reference = 0;
    static const struct option opts[] = {
        {"model", 1, 0, 'm'},   {"arch", 1, 0, 'a'},    {"config", 1, 0, 'c'},    {"input", 1, 0, 'i'},
        {"output", 1, 0, 'o'},  {"shape", 1, 0, 's'},   {"threads", 1, 0, 't'},   {"reference", 0, 0, 'r'},
        {"trace", 1, 0, 'T'},   {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'a': arch = optarg; break;
        case 'c': config = optarg; break;
        case 'i': in_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 's': shape = optarg; break;
        case 'r': reference = 1; break;
        case 'T': trace_path = optarg; break;
        case 't':
            if (cli_parse_int(optarg, 1, 256, &threads)) return cli_usage("infer", "--threads must be 1..256");
            break;
        case 'h': fputs(infer_help, stdout); return 0;
        default: return cli_usage("infer", "unknown option");
        }
    }
    if (!model || !in_path || !out_path || !shape) return cli_usage("infer", "--model, --input, --shape and --output are required");
    long n, ch, h, w;
    char extra;
    if (sscanf(shape, "%ld,%ld,%ld,%ld%c", &n, &ch, &h, &w, &extra) != 4 || n < 1 || n > 4096 || ch != 3 || h < 32 ||
        w < 32 || h > 4096 || w > 4096)
        return cli_usage("infer", "--shape must be N,3,H,W with 1 <= N <= 4096 and 32 <= H, W <= 4096");

    int rc = 1;
    float *x = NULL, *y = NULL;
    FILE *fo = NULL, *ft = NULL;
    lsq_session *s = NULL;
    lsq_model *m = cli_load_model("infer", model, arch, config);
    if (!m) return 1;
    size_t per = (size_t)3 * h * w, classes = (size_t)lsq_model_num_classes(m);
    FILE *fi = fopen(in_path, "rb");
    if (!fi) {
        cli_error("infer", "%s: cannot open", in_path);
        goto done;
    }
    fseek(fi, 0, SEEK_END);
    long size = ftell(fi);
    fseek(fi, 0, SEEK_SET);
    if (size != (long)(per * n * sizeof(float))) {
        fclose(fi);
        cli_error("infer", "%s: %ld bytes, but shape %s needs %zu", in_path, size, shape, per * n * sizeof(float));
        goto done;
    }
    x = malloc(per * sizeof(float));
    y = malloc(classes * sizeof(float));
    fo = fopen(out_path, "wb");
    if (!x || !y || !fo) {
        fclose(fi);
        cli_error("infer", "%s", !fo ? "cannot open the output file" : "out of memory");
        goto done;
    }
    lsq_error err = {{0}};
    lsq_session_options so = {.height = (int)h, .width = (int)w, .threads = (int)threads, .reference = reference};
    if (lsq_session_create(m, &so, &s, &err)) {
        fclose(fi);
        cli_error("infer", "%s", err.msg);
        goto done;
    }
    if (trace_path) {
        if (!(ft = fopen(trace_path, "wb"))) {
            fclose(fi);
            cli_error("infer", "%s: cannot open", trace_path);
            goto done;
        }
        if (lsq_session_set_trace(s, trace_write, ft)) {
            fclose(fi);
            cli_error("infer", "--trace needs a quantized configuration");
            goto done;
        }
    }
    for (long i = 0; i < n; i++) {
        if (fread(x, sizeof(float), per, fi) != per) {
            fclose(fi);
            cli_error("infer", "%s: short read", in_path);
            goto done;
        }
        lsq_session_run(s, x, y);
        if (fwrite(y, sizeof(float), classes, fo) != classes) {
            fclose(fi);
            cli_error("infer", "%s: write failed", out_path);
            goto done;
        }
    }
    fclose(fi);
    rc = 0;
done:
    if (fo && fclose(fo) && !rc) rc = cli_error("infer", "%s: write failed", out_path);
    if (ft && fclose(ft) && !rc) rc = cli_error("infer", "%s: write failed", trace_path);
    lsq_session_free(s);
    lsq_model_free(m);
    free(x);
    free(y);
    return rc;
}

/* ==== lsq classify ============================================================================= */

static const char classify_help[] =
    "usage: lsq classify --model M.safetensors [--arch A] [--config C] [--topk K] [--json] [--threads T]\n"
    "                    IMAGE...\n"
    "Decodes each image (JPEG, PNG, WebP), preprocesses it as the checkpoint's metadata says\n"
    "(timm's defaults otherwise), and prints the top-K labels with softmax probabilities.\n";

static void softmax(const float *x, float *p, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += p[i] = expf(x[i] - mx);
    for (int i = 0; i < n; i++) p[i] = (float)(p[i] / sum);
}

static void topk(const float *p, int n, int k, int *idx)
{
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            int taken = 0;
            for (int q = 0; q < j; q++) taken |= idx[q] == i;
            if (!taken && (best < 0 || p[i] > p[best])) best = i;
        }
        idx[j] = best;
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

int cmd_classify(int argc, char **argv)
{
    const char *model = NULL, *arch = NULL, *config = NULL;
    long k = 5, threads = 1;
    int json = 0;
    static const struct option opts[] = {{"model", 1, 0, 'm'}, {"arch", 1, 0, 'a'}, {"config", 1, 0, 'c'},
                                         {"topk", 1, 0, 'k'},  {"json", 0, 0, 'j'}, {"threads", 1, 0, 't'},
                                         {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'a': arch = optarg; break;
        case 'c': config = optarg; break;
        case 'j': json = 1; break;
        case 'k':
            if (cli_parse_int(optarg, 1, 1000000, &k)) return cli_usage("classify", "--topk must be a positive integer");
            break;
        case 't':
            if (cli_parse_int(optarg, 1, 256, &threads)) return cli_usage("classify", "--threads must be 1..256");
            break;
        case 'h': fputs(classify_help, stdout); return 0;
        default: return cli_usage("classify", "unknown option");
        }
    }
    if (!model || optind >= argc) return cli_usage("classify", "--model and at least one IMAGE are required");
    lsq_model *m = cli_load_model("classify", model, arch, config);
    if (!m) return 1;
    const lsq_preprocess *pp = lsq_model_preprocess(m);
    int n = lsq_model_num_classes(m), S = pp->input_size;
    if (k > n) k = n;
    float *x = malloc((size_t)3 * S * S * sizeof(float)), *logits = malloc((size_t)n * sizeof(float)),
          *prob = malloc((size_t)n * sizeof(float));
    int *idx = malloc((size_t)k * sizeof(int));
    lsq_session *s = NULL;
    lsq_error err = {{0}};
    int rc = 0;
    lsq_session_options so = {.height = S, .width = S, .threads = (int)threads};
    if (!x || !logits || !prob || !idx) {
        rc = cli_error("classify", "out of memory");
        goto done;
    }
    if (lsq_session_create(m, &so, &s, &err)) {
        rc = cli_error("classify", "%s", err.msg);
        goto done;
    }
    if (json) printf("[");
    for (int i = optind; i < argc; i++) {
        lsq_image img = {0};
        if (lsq_image_load(argv[i], NULL, &img, &err)) { /* the message names the file */
            rc = cli_error("classify", "%s", err.msg);
            continue;
        }
        if (lsq_image_preprocess(&img, pp, x, &err)) {
            lsq_image_free(&img);
            rc = cli_error("classify", "%s: %s", argv[i], err.msg);
            continue;
        }
        lsq_image_free(&img);
        lsq_session_run(s, x, logits);
        softmax(logits, prob, n);
        topk(prob, n, (int)k, idx);
        if (json) {
            printf("%s{\"image\":", i > optind ? "," : "");
            json_str(stdout, argv[i]);
            printf(",\"predictions\":[");
            for (int j = 0; j < k; j++) {
                printf("%s{\"index\":%d,\"label\":", j ? "," : "", idx[j]);
                json_str(stdout, lsq_model_label(m, idx[j]));
                printf(",\"score\":%.6g}", prob[idx[j]]);
            }
            printf("]}");
        } else {
            printf("%s\n", argv[i]);
            for (int j = 0; j < k; j++) printf("  %8.4f%%  %5d  %s\n", 100.0 * prob[idx[j]], idx[j], lsq_model_label(m, idx[j]));
        }
    }
    if (json) printf("]\n");
done:
    lsq_session_free(s);
    lsq_model_free(m);
    free(x);
    free(logits);
    free(prob);
    free(idx);
    return rc;
}
