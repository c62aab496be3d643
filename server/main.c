/* main.c - lsq-server: start-up (options, manifest, models and their calibration, warm-up,
 * benchmark), serving, and the SIGTERM/SIGINT drain. */
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "http.h"
#include "log.h"
#include "lsq.h"
#include "metrics.h"
#include "models.h"
#include "options.h"
#include "pool.h"
#include "report.h"
#include "version.h"
#include "worker.h"

static int is_dir_with_manifest(const char *d)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%s/manifest.json", d);
    return stat(p, &st) == 0;
}

/* Without --models: models/bundled next to the binary's source tree (build/lsq-server ->
 * ../models/bundled), then ./models/bundled, then the installed share folder. */
static const char *default_models_dir(char *buf, size_t len)
{
    char exe[PATH_MAX - 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, len, "%s/../models/bundled", exe);
            if (is_dir_with_manifest(buf)) return buf;
        }
    }
    if (is_dir_with_manifest("models/bundled")) return "models/bundled";
    snprintf(buf, len, "%s", LSQ_SERVER_SHARE "/models");
    return buf;
}

int main(int argc, char **argv)
{
    lsq_blas_fixup(argc, argv);
    server_options opt;
    int rc = options_parse(&opt, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    char dirbuf[PATH_MAX];
    if (!opt.models_dir) opt.models_dir = default_models_dir(dirbuf, sizeof dirbuf);

    /* every thread inherits this mask: the signals are taken by sigwait below only */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    srv_log("version %s (engine %s, %s)", LSQ_SERVER_VERSION, LSQ_VERSION, LSQ_SERVER_BUILD);
    srv_log("%s", lsq_runtime_describe());
    model_registry reg;
    char err[1024];
    if (!is_dir_with_manifest(opt.models_dir)) {
        srv_log("no models: %s/manifest.json does not exist.\n"
              "  Serve your own with --models DIR (a folder with a manifest.json; see server/README.md), or get the\n"
              "  bundled models into models/bundled/ (they are committed there once trained; see models/README.md).",
              opt.models_dir);
        return 1;
    }
    char cachebuf[PATH_MAX];
    const char *cache = cache_dir(&opt, cachebuf, sizeof cachebuf);
    if (registry_load(&reg, opt.models_dir, cache, err, sizeof err)) {
        srv_log("cannot load the models: %s", err);
        return 1;
    }
    for (int i = 0; i < reg.n; i++) {
        const model_entry *e = &reg.entries[i];
        srv_log("model %s config %s%s%s: %s, %d classes, %dx%d input, %lld bytes, %s", e->mm->name, e->mc->config,
              e->is_default ? " (default)" : "", e->mc->calibrated ? " (calibrated)" : "", lsq_model_arch(e->model),
              e->classes, e->input_size, e->input_size, (long long)e->file_bytes,
              e->file ? e->file : "in memory");
    }
    metrics *met = metrics_create(&reg);
    report *rep = met ? report_create(&reg, &opt, met) : NULL;
    if (!rep) {
        srv_log("out of memory");
        return 1;
    }
    double t0 = now_ms();
    worker_shared ws = {&reg, &opt};
    pool_config pc = {opt.workers, opt.queue, worker_create, worker_run, worker_destroy, &ws};
    pool *pl = pool_create(&pc, err, sizeof err);
    if (!pl) {
        srv_log("cannot start the workers: %s", err);
        return 1;
    }
    srv_log("%d workers x %d intra-op threads warmed up in %.0f ms; queue %d; JPEG decode %s", opt.workers, opt.threads,
            now_ms() - t0, opt.queue, opt.dct_scale ? "DCT-scaled where large (--dct-scale, not PIL-exact)" : "exact");
    report_measure_benchmarks(rep);
    if (opt.eval == EVAL_MODE_STARTUP) {
        srv_log("measuring accuracy before serving (--eval startup)");
        report_measure_accuracy(rep);
    }

    http_server hs = {.opt = &opt, .reg = &reg, .pool = pl, .metrics = met, .report = rep};
    if (http_start(&hs, err, sizeof err)) {
        srv_log("%s", err);
        return 1;
    }
    atomic_store(&hs.ready, 1);
    srv_log("ready: listening on %s:%d", opt.host ? opt.host : "0.0.0.0", hs.port);
    if (opt.eval == EVAL_MODE_BACKGROUND && report_start_background(rep)) srv_log("cannot start the accuracy thread");

    int sig = 0;
    sigwait(&sigs, &sig);
    /* drain: readiness turns 503, the listener closes, accepted requests finish */
    atomic_store(&hs.ready, 0);
    atomic_store(&hs.draining, 1);
    http_quiesce(&hs);
    srv_log("%s: draining %d requests (deadline %.0f s)", sig == SIGTERM ? "SIGTERM" : "SIGINT", atomic_load(&hs.active),
          opt.drain_s);
    report_stop(rep);
    double deadline = now_ms() + opt.drain_s * 1e3;
    struct timespec tick = {0, 10 * 1000000};
    int drained = 0;
    for (;;) {
        if (atomic_load(&hs.active) == 0 && pool_depth(pl) == 0 && pool_inflight(pl) == 0) {
            drained = 1;
            break;
        }
        if (now_ms() > deadline) break;
        siginfo_t si;
        if (sigtimedwait(&sigs, &si, &tick) > 0) {
            srv_log("second signal: exiting without finishing %d requests", atomic_load(&hs.active));
            _exit(1);
        }
    }
    if (!drained) {
        srv_log("drain deadline passed with %d requests unfinished; exiting", atomic_load(&hs.active));
        _exit(1);
    }
    http_stop(&hs);
    pool_destroy(pl);
    report_free(rep);
    metrics_free(met);
    registry_free(&reg);
    srv_log("drained; exiting");
    return 0;
}
