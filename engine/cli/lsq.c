/* lsq.c - the `lsq` command-line tool: dispatch to subcommands, shared helpers. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"classify", cmd_classify, "classify images: labels and softmax probabilities"},
    {"infer", cmd_infer, "raw float32 NCHW input -> raw float32 logits"},
    {"inspect", cmd_inspect, "architecture, classes, parameters, tensors, metadata of a checkpoint"},
    {"init", cmd_init, "write a checkpoint with seeded random weights"},
    {"bench", cmd_bench, "time batch-1 inference (p50/p90/p99)"},
    {"eval", cmd_eval, "accuracy and latency of configurations on a labelled dataset"},
    {"quantize", cmd_quantize, "LSQ+ initialisation: FP32 checkpoint + calibration images -> packed model"},
    {"preprocess", cmd_preprocess, "decode + resize + crop + normalise an image to raw float32"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: lsq <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'lsq <command> --help' describes a command's options. lsq %s\n", LSQ_VERSION);
}

int main(int argc, char **argv)
{
    lsq_blas_fixup(argc, argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("lsq %s\n%s\n", LSQ_VERSION, lsq_runtime_describe());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "lsq: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

int cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lsq %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lsq %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'lsq %s --help')\n", cmd);
    va_end(ap);
    return 2;
}

int cli_parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

lsq_model *cli_load_model(const char *cmd, const char *path, const char *arch, const char *config)
{
    lsq_model *m = NULL;
    lsq_error err = {{0}};
    lsq_load_options lo = {.arch = arch, .config = config};
    lsq_status s = lsq_model_load(path, &lo, &m, &err);
    if (s) {
        cli_error(cmd, "%s", err.msg[0] ? err.msg : lsq_status_to_string(s));
        return NULL;
    }
    return m;
}

double cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void cli_sort(double *t, int n) { qsort(t, (size_t)n, sizeof *t, cmp_double); }

double cli_percentile(const double *sorted, int n, double q)
{
    int i = (int)ceil(q * n) - 1;
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}
