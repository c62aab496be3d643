/* options.h - the server's settings: command-line flags, each with an LSQ_* environment variable. */
#ifndef LSQ_SERVER_OPTIONS_H
#define LSQ_SERVER_OPTIONS_H

#include <stddef.h>

typedef enum {
    EVAL_MODE_BACKGROUND = 0, /* measure accuracy after ready, on a background thread */
    EVAL_MODE_STARTUP,        /* measure before reporting ready */
    EVAL_MODE_OFF,            /* report accuracy as not measured */
} eval_mode;

typedef struct {
    const char *host;        /* bind address; NULL = all */
    int port;                /* 0 = any free port (printed in the "listening" log line) */
    const char *models_dir;  /* folder holding manifest.json */
    int workers;             /* inference worker threads */
    int threads;             /* intra-op threads per worker session */
    int queue;               /* bounded queue capacity, requests */
    int http_threads;        /* libmicrohttpd thread-pool size */
    long long max_body;      /* request body limit, bytes */
    double timeout_s;        /* deadline for a request to start inference */
    double drain_s;          /* SIGTERM drain deadline */
    const char *api_key;     /* bearer token on the inference endpoints; NULL = none */
    eval_mode eval;
    int eval_limit;          /* images per configuration; 0 = the whole dataset */
    int bench_iters;         /* timed runs of the start-up benchmark */
    const char *cache_dir;   /* accuracy and calibration cache; "" = none, NULL = the default (cache.h) */
    long long max_pixels;    /* decoded image limit */
    int dct_scale;           /* 1: large JPEGs decode at 1/2..1/8 scale (lsq_image_decode_scaled) */
    int max_connections;
    int access_log;          /* 1: one line per request on stdout */
} server_options;

/* Fill o from defaults, then LSQ_* variables, then argv. Returns 0 to go on, 1 after printing
 * help or version (exit 0), 2 on a usage error (message printed). */
int options_parse(server_options *o, int argc, char **argv);

#endif
