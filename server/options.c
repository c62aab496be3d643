/* options.c - command-line flags and their LSQ_* environment variables (flags win). */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lsq.h"
#include "version.h"

static const char usage[] =
    "usage: lsq-server [options]\n"
    "Serves the models of a manifest over HTTP (REST, TorchServe-style, Open Inference Protocol v2).\n"
    "Every option can also be set by the environment variable in brackets; a flag wins.\n"
    "  --port N            listen port (default 8080; 0 = any free port)            [LSQ_PORT]\n"
    "  --host ADDR         bind address (default: all IPv4 addresses)                 [LSQ_HOST]\n"
    "  --models DIR        folder with manifest.json (default: the bundled models)   [LSQ_MODELS]\n"
    "  --workers N         inference worker threads (default: number of CPUs)        [LSQ_WORKERS]\n"
    "  --threads N         intra-op threads per inference (default 1)                [LSQ_THREADS]\n"
    "  --queue N           queued requests before 503 (default 64)                   [LSQ_QUEUE]\n"
    "  --http-threads N    HTTP event-loop threads (default 2)                       [LSQ_HTTP_THREADS]\n"
    "  --max-body BYTES    request body limit (default 16777216)                     [LSQ_MAX_BODY]\n"
    "  --max-pixels N      decoded image limit, pixels (default 67108864)            [LSQ_MAX_PIXELS]\n"
    "  --dct-scale         decode JPEGs at 1/2..1/8 scale while they stay >= 2x the   [LSQ_DCT_SCALE=1]\n"
    "                      model's resize size: several times faster on photos, but\n"
    "                      not PIL-exact (default: exact)\n"
    "  --timeout SECONDS   a request not started by then gets 504 (default 30)       [LSQ_TIMEOUT]\n"
    "  --drain SECONDS     SIGTERM drain deadline (default 30)                       [LSQ_DRAIN]\n"
    "  --api-key KEY       require 'Authorization: Bearer KEY' on inference          [LSQ_API_KEY]\n"
    "  --eval MODE         accuracy at start-up: background, startup or off          [LSQ_EVAL]\n"
    "  --eval-limit N      images per configuration (default 0 = whole dataset)      [LSQ_EVAL_LIMIT]\n"
    "  --bench-iters N     timed runs of the start-up benchmark (default 20)         [LSQ_BENCH_ITERS]\n"
    "  --cache-dir DIR     accuracy + calibration cache ('' = none; ~/.cache/lsq)    [LSQ_CACHE_DIR]\n"
    "  --max-connections N concurrent connections (default 1024)                     [LSQ_MAX_CONNECTIONS]\n"
    "  --no-access-log     no per-request log line on stdout                         [LSQ_ACCESS_LOG=0]\n"
    "  --version           print the version, kernels and BLAS core\n"
    "  --help\n";

static int parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_secs(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 86400 * 365.0) return -1;
    *out = v;
    return 0;
}

enum { O_PORT = 256, O_HOST, O_MODELS, O_WORKERS, O_THREADS, O_QUEUE, O_HTTP_THREADS, O_MAX_BODY, O_MAX_PIXELS,
       O_TIMEOUT, O_DRAIN, O_API_KEY, O_EVAL, O_EVAL_LIMIT, O_BENCH_ITERS, O_CACHE_DIR, O_MAX_CONN, O_NO_LOG,
       O_DCT_SCALE, O_VERSION, O_HELP };

static const struct {
    int id;
    const char *env;
} env_names[] = {
    {O_PORT, "LSQ_PORT"},         {O_HOST, "LSQ_HOST"},           {O_MODELS, "LSQ_MODELS"},
    {O_WORKERS, "LSQ_WORKERS"},   {O_THREADS, "LSQ_THREADS"},     {O_QUEUE, "LSQ_QUEUE"},
    {O_HTTP_THREADS, "LSQ_HTTP_THREADS"}, {O_MAX_BODY, "LSQ_MAX_BODY"}, {O_MAX_PIXELS, "LSQ_MAX_PIXELS"},
    {O_TIMEOUT, "LSQ_TIMEOUT"},   {O_DRAIN, "LSQ_DRAIN"},         {O_API_KEY, "LSQ_API_KEY"},
    {O_EVAL, "LSQ_EVAL"},         {O_EVAL_LIMIT, "LSQ_EVAL_LIMIT"}, {O_BENCH_ITERS, "LSQ_BENCH_ITERS"},
    {O_CACHE_DIR, "LSQ_CACHE_DIR"}, {O_MAX_CONN, "LSQ_MAX_CONNECTIONS"},
};

/* Apply one setting; src names the flag or variable for the error message. */
static int apply(server_options *o, int id, const char *v, const char *src)
{
    long long n;
    switch (id) {
    case O_PORT: if (parse_ll(v, 0, 65535, &n)) goto bad; o->port = (int)n; return 0;
    case O_HOST: o->host = *v ? v : NULL; return 0;
    case O_MODELS: o->models_dir = v; return 0;
    case O_WORKERS: if (parse_ll(v, 1, 256, &n)) goto bad; o->workers = (int)n; return 0;
    case O_THREADS: if (parse_ll(v, 1, 256, &n)) goto bad; o->threads = (int)n; return 0;
    case O_QUEUE: if (parse_ll(v, 1, 1000000, &n)) goto bad; o->queue = (int)n; return 0;
    case O_HTTP_THREADS: if (parse_ll(v, 1, 64, &n)) goto bad; o->http_threads = (int)n; return 0;
    case O_MAX_BODY: if (parse_ll(v, 1, 1LL << 32, &n)) goto bad; o->max_body = n; return 0;
    case O_MAX_PIXELS: if (parse_ll(v, 1, 1LL << 32, &n)) goto bad; o->max_pixels = n; return 0;
    case O_TIMEOUT: if (parse_secs(v, &o->timeout_s)) goto bad; return 0;
    case O_DRAIN: if (parse_secs(v, &o->drain_s)) goto bad; return 0;
    case O_API_KEY: o->api_key = *v ? v : NULL; return 0;
    case O_EVAL:
        if (!strcmp(v, "background")) o->eval = EVAL_MODE_BACKGROUND;
        else if (!strcmp(v, "startup")) o->eval = EVAL_MODE_STARTUP;
        else if (!strcmp(v, "off")) o->eval = EVAL_MODE_OFF;
        else goto bad;
        return 0;
    case O_EVAL_LIMIT: if (parse_ll(v, 0, INT_MAX, &n)) goto bad; o->eval_limit = (int)n; return 0;
    case O_BENCH_ITERS: if (parse_ll(v, 1, 100000, &n)) goto bad; o->bench_iters = (int)n; return 0;
    case O_CACHE_DIR: o->cache_dir = v; return 0;
    case O_MAX_CONN: if (parse_ll(v, 4, 1000000, &n)) goto bad; o->max_connections = (int)n; return 0;
    }
bad:
    fprintf(stderr, "lsq-server: %s: invalid value '%s'\n%s", src, v, "try 'lsq-server --help'\n");
    return 2;
}

int options_parse(server_options *o, int argc, char **argv)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (server_options){.port = 8080, .workers = ncpu > 0 ? (int)ncpu : 1, .threads = 1, .queue = 64,
                          .http_threads = 2, .max_body = 16 << 20, .timeout_s = 30, .drain_s = 30,
                          .eval = EVAL_MODE_BACKGROUND, .bench_iters = 20, .max_pixels = LSQ_DEFAULT_MAX_PIXELS,
                          .max_connections = 1024, .access_log = 1};
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++) {
        const char *v = getenv(env_names[i].env);
        if (v && apply(o, env_names[i].id, v, env_names[i].env)) return 2;
    }
    const char *al = getenv("LSQ_ACCESS_LOG");
    if (al && !strcmp(al, "0")) o->access_log = 0;
    const char *ds = getenv("LSQ_DCT_SCALE");
    if (ds && *ds) {
        if (strcmp(ds, "0") && strcmp(ds, "1")) return apply(o, -1, ds, "LSQ_DCT_SCALE");
        o->dct_scale = ds[0] == '1';
    }

    static const struct option opts[] = {
        {"port", 1, 0, O_PORT},       {"host", 1, 0, O_HOST},         {"models", 1, 0, O_MODELS},
        {"workers", 1, 0, O_WORKERS}, {"threads", 1, 0, O_THREADS},   {"queue", 1, 0, O_QUEUE},
        {"http-threads", 1, 0, O_HTTP_THREADS}, {"max-body", 1, 0, O_MAX_BODY}, {"max-pixels", 1, 0, O_MAX_PIXELS},
        {"timeout", 1, 0, O_TIMEOUT}, {"drain", 1, 0, O_DRAIN},       {"api-key", 1, 0, O_API_KEY},
        {"eval", 1, 0, O_EVAL},       {"eval-limit", 1, 0, O_EVAL_LIMIT}, {"bench-iters", 1, 0, O_BENCH_ITERS},
        {"cache-dir", 1, 0, O_CACHE_DIR}, {"max-connections", 1, 0, O_MAX_CONN}, {"no-access-log", 0, 0, O_NO_LOG},
        {"dct-scale", 0, 0, O_DCT_SCALE},
        {"version", 0, 0, O_VERSION}, {"help", 0, 0, O_HELP},         {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == O_HELP) {
            fputs(usage, stdout);
            return 1;
        }
        if (c == O_VERSION) {
            printf("lsq-server %s (engine %s, %s)\n%s\n", LSQ_SERVER_VERSION, LSQ_VERSION, LSQ_SERVER_BUILD,
                   lsq_runtime_describe());
            return 1;
        }
        if (c == O_NO_LOG) {
            o->access_log = 0;
            continue;
        }
        if (c == O_DCT_SCALE) {
            o->dct_scale = 1;
            continue;
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "lsq-server: unknown option or missing value: %s\ntry 'lsq-server --help'\n",
                    argv[optind - 1]);
            return 2;
        }
        char src[48];
        snprintf(src, sizeof src, "--%s", opts[0].name);
        for (size_t i = 0; opts[i].name; i++)
            if (opts[i].val == c) snprintf(src, sizeof src, "--%s", opts[i].name);
        if (apply(o, c, optarg, src)) return 2;
    }
    if (optind != argc) {
        fprintf(stderr, "lsq-server: unexpected argument '%s'\ntry 'lsq-server --help'\n", argv[optind]);
        return 2;
    }
    return 0;
}
