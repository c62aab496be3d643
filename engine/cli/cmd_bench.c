/* cmd_bench.c - `lsq bench`: batch-1 latency percentiles of one configuration.
 *
 * The input is a fixed non-zero pattern (zeros can run faster than real data). Without --model the
 * benchmark uses `lsq init`'s seeded weights (seed 0, 1000 classes), written to a temporary file
 * whose size is reported as model_bytes; a quantized --config then quantizes them as `lsq quantize`
 * does, calibrating on BENCH_CALIB_INPUTS seeded standard-normal images at the benchmark size, and
 * model_bytes is the packed (deployable) file's size. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define BENCH_CALIB_INPUTS 8

/* Seeded N(0, 1) calibration images (splitmix64 + Box-Muller: the same on every machine). */
static float *synthetic_inputs(int n, long size)
{
    size_t total = (size_t)n * 3 * size * size;
    float *x = malloc(total * sizeof(float));
    uint64_t st = 0x5EED;
    for (size_t i = 0; x && i < total; i++) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            uint64_t z = (st += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            u[k] = ((double)((z ^ (z >> 31)) >> 11) + 0.5) * 0x1.0p-53;
        }
        x[i] = (float)(sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
    }
    return x;
}

static const char bench_help[] =
    "usage: lsq bench (--arch A | --model M) [--config C] [--size 224] [--threads T] [--iters K]\n"
    "                 [--warmup W] [--json]\n"
    "Times batch-1 inference. --json prints one object: {\"arch\",\"config\",\"size\",\"threads\",\n"
    "\"iters\",\"p50_ms\",\"p90_ms\",\"p99_ms\",\"min_ms\",\"model_bytes\"}.\n"
    "Without --model: lsq init's seeded weights (seed 0, 1000 classes); a quantized --config quantizes them\n"
    "first (lsq quantize's initialisation, calibrated on 8 seeded normal images at --size) and model_bytes\n"
    "is the packed file's size. With --model: the file's own configuration unless --config.\n";

int cmd_bench(int argc, char **argv)
{
    const char *arch = NULL, *model = NULL, *config = NULL; /* NULL: the file's own (fp32 without --model) */
    long size = 224, threads = 1, iters = 50, warmup = 5;
    int json = 0;
    static const struct option opts[] = {
        {"arch", 1, 0, 'a'},  {"model", 1, 0, 'm'},  {"config", 1, 0, 'c'}, {"size", 1, 0, 's'}, {"threads", 1, 0, 't'},
        {"iters", 1, 0, 'i'}, {"warmup", 1, 0, 'w'}, {"json", 0, 0, 'j'},   {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'a': arch = optarg; break;
        case 'm': model = optarg; break;
        case 'c': config = optarg; break;
        case 'j': json = 1; break;
        case 's':
            if (cli_parse_int(optarg, 32, 4096, &size)) return cli_usage("bench", "--size must be 32..4096");
            break;
        case 't':
            if (cli_parse_int(optarg, 1, 256, &threads)) return cli_usage("bench", "--threads must be 1..256");
            break;
        case 'i':
            if (cli_parse_int(optarg, 1, 1000000, &iters)) return cli_usage("bench", "--iters must be >= 1");
            break;
        case 'w':
            if (cli_parse_int(optarg, 0, 1000000, &warmup)) return cli_usage("bench", "--warmup must be >= 0");
            break;
        case 'h': fputs(bench_help, stdout); return 0;
        default: return cli_usage("bench", "unknown option");
        }
    }
    if (!arch && !model) return cli_usage("bench", "--arch (or --model) is required");

    char tmp[64] = "", qtmp[64] = "";
    lsq_error err = {{0}};
    if (!model) {
        if (!config) config = "fp32";
        snprintf(tmp, sizeof tmp, "/tmp/lsq-bench-%d.safetensors", (int)getpid());
        if (lsq_model_init_random(arch, 1000, 0, tmp, &err)) return cli_error("bench", "%s", err.msg);
        model = tmp;
        if (strcmp(config, "fp32")) { /* quantize the seeded weights (lsq quantize on synthetic inputs) */
            snprintf(qtmp, sizeof qtmp, "/tmp/lsq-bench-%d.q.safetensors", (int)getpid()); /* config may hold '*' */
            float *cx = synthetic_inputs(BENCH_CALIB_INPUTS, size);
            lsq_calib_options co = {.config = config, .size = (int)size, .num_inputs = BENCH_CALIB_INPUTS};
            lsq_status qs = cx ? lsq_model_quantize(tmp, &co, cx, qtmp, &err) : LSQ_ERR_NOMEM;
            free(cx);
            unlink(tmp);
            if (qs) return cli_error("bench", "%s", cx || qs != LSQ_ERR_NOMEM ? err.msg : "out of memory");
            snprintf(tmp, sizeof tmp, "%s", qtmp);
            model = tmp;
        }
    }
    lsq_model *m = cli_load_model("bench", model, arch, config);
    if (tmp[0]) unlink(tmp);
    if (!m) return 1;
    lsq_session *s = NULL;
    lsq_session_options so = {.height = (int)size, .width = (int)size, .threads = (int)threads};
    size_t n = (size_t)3 * size * size;
    float *x = malloc(n * sizeof(float)), *y = malloc((size_t)lsq_model_num_classes(m) * sizeof(float));
    double *t = malloc((size_t)iters * sizeof(double));
    int rc = 1;
    if (!x || !y || !t) {
        cli_error("bench", "out of memory");
        goto done;
    }
    if (lsq_session_create(m, &so, &s, &err)) {
        cli_error("bench", "%s", err.msg);
        goto done;
    }
    for (size_t i = 0; i < n; i++) x[i] = sinf((float)i * 0.37f) * 1.5f;
    for (long i = 0; i < warmup; i++) lsq_session_run(s, x, y);
    for (long i = 0; i < iters; i++) {
        double t0 = cli_now_ms();
        lsq_session_run(s, x, y);
        t[i] = cli_now_ms() - t0;
    }
    cli_sort(t, (int)iters);
    double p50 = cli_percentile(t, (int)iters, 0.5), p90 = cli_percentile(t, (int)iters, 0.9),
           p99 = cli_percentile(t, (int)iters, 0.99);
    if (json)
        printf("{\"arch\":\"%s\",\"config\":\"%s\",\"size\":%ld,\"threads\":%ld,\"iters\":%ld,\"p50_ms\":%.4f,"
               "\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"min_ms\":%.4f,\"model_bytes\":%lld}\n",
               lsq_model_arch(m), lsq_model_config(m), size, threads, iters, p50, p90, p99, t[0], (long long)lsq_model_file_bytes(m));
    else
        printf("%s %s %ldx%ld, %ld thread(s), %ld iters: p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  min %.3f ms\n"
               "model file %lld bytes; %s\n",
               lsq_model_arch(m), lsq_model_config(m), size, size, threads, iters, p50, p90, p99, t[0], (long long)lsq_model_file_bytes(m),
               lsq_runtime_describe());
    rc = 0;
done:
    lsq_session_free(s);
    lsq_model_free(m);
    free(x);
    free(y);
    free(t);
    return rc;
}
