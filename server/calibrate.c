/* calibrate.c - the manifest's extra configurations, made at start-up by the engine's calibration.
 *
 * Each one is the model's "fp32" checkpoint through lsq_calib_create / _add / _write on the
 * manifest's calibration images: N of them spread evenly over the set (item floor(i * size / N)),
 * preprocessed as the calibration asks - exactly what `lsq quantize --calib PATH --split SPLIT
 * --calib-images N` does, so the file is byte-identical to that command's. The packed checkpoint
 * goes to the cache as calib-KEY.safetensors, KEY hashing the FP32 file's bytes, the configuration,
 * the calibration settings, the set's size, and the engine's version, build and kernels; a restart
 * loads it. Without a writable cache the checkpoint goes to a temporary file that is unlinked once
 * loaded (the engine keeps it mapped): calibrated in memory, every start. */
#include "calibrate.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"
#include "version.h"

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *calib_cache_to_string(calib_cache c)
{
    switch (c) {
    case CALIB_CACHE_HIT: return "hit";
    case CALIB_CACHE_MISS: return "miss";
    case CALIB_CACHE_OFF: return "off";
    }
    return "?";
}

/* Observe the n images and write the packed checkpoint to out. */
static lsq_status calibrate_to(const manifest_model *mm, const manifest_config *mc, const lsq_dataset *ds, int n,
                               const char *out, const char *fallback, int *used_fallback, lsq_error *le)
{
    const manifest_calibration *cal = &mm->calib;
    lsq_calib_options co = {.config = mc->config, .act_init = cal->init, .arch = mm->arch, .num_inputs = n};
    lsq_calib *c = NULL;
    float *x = NULL;
    lsq_status s = lsq_calib_create(mc->file, &co, &c, le);
    if (s) return s;
    const lsq_preprocess *pp = lsq_calib_preprocess(c);
    int S = pp->input_size, total = lsq_dataset_size(ds);
    if (!(x = malloc((size_t)3 * S * S * sizeof(float)))) {
        s = LSQ_ERR_NOMEM;
        snprintf(le->msg, sizeof le->msg, "out of memory");
    }
    for (int i = 0; !s && i < n; i++) {
        int item = (int)((int64_t)i * total / n);
        lsq_image img = {0};
        s = lsq_dataset_get(ds, item, &img, le);
        if (!s) s = lsq_image_preprocess(&img, pp, x, le);
        lsq_image_free(&img);
        if (!s) s = lsq_calib_add(c, x, le);
        if (s) {
            char m[sizeof le->msg];
            snprintf(m, sizeof m, "%s", le->msg);
            snprintf(le->msg, sizeof le->msg, "calibration item %d: %.400s", item, m);
        }
    }
    if (!s) {
        s = lsq_calib_write(c, out, le);
        /* the cache folder was writable a moment ago, but the disk may be full: calibration is done,
         * so write the same result (lsq_calib_write may be called again) where it can go */
        if (s && fallback) {
            srv_log("warning: cannot write the calibration cache %s (%s); keeping it in memory", out, le->msg);
            *used_fallback = 1;
            s = lsq_calib_write(c, fallback, le);
        }
    }
    free(x);
    lsq_calib_free(c);
    return s;
}

/* A temporary file under $TMPDIR (or /tmp) to write a checkpoint that is unlinked once loaded. */
static int temp_path(char *buf, size_t len)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, len, "%s/lsq-server-calib-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(buf);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

int calibrate_load(const manifest *man, const manifest_model *mm, const manifest_config *mc, const char *cache_dir,
                   lsq_dataset **data, lsq_model **out, calib_result *res, char *err, size_t errlen)
{
    const manifest_calibration *cal = &mm->calib;
    char where[600];
    snprintf(where, sizeof where, "%.300s/manifest.json: model \"%s\" extra config \"%s\"", man->dir, mm->name,
             mc->config);
    memset(res, 0, sizeof *res);
    *out = NULL;
    lsq_error le = {{0}};
    if (!*data && lsq_dataset_open(cal->path, cal->split, data, &le))
        return srv_fail(err, errlen, "%s: calibration data (split %s): %s", where, cal->split, le.msg);
    int total = lsq_dataset_size(*data), n = cal->images < total ? cal->images : total;
    if (n < 1) return srv_fail(err, errlen, "%s: calibration data %s holds no images", where, cal->path);
    res->images = n;
    res->total = total;
    lsq_load_options lo = {.arch = mm->arch, .config = mc->config};

    /* the cache: hit, or where to write */
    char cpath[PATH_MAX] = "";
    if (cache_dir) {
        char extra[2048];
        snprintf(extra, sizeof extra, "|calib|%s|%s|%s|%s|%d|%d|%s|%s|%d|%s|%s", mc->config, mm->arch ? mm->arch : "",
                 cal->path, cal->split, n, total, cal->init ? cal->init : "", LSQ_VERSION, LSQ_FORMAT_VERSION,
                 LSQ_SERVER_BUILD, lsq_runtime_describe());
        uint64_t key = cache_key(mc->file, extra);
        if (!key)
            return srv_fail(err, errlen, "%s: cannot read the FP32 checkpoint %s: %s", where, mc->file, strerror(errno));
        int k = snprintf(cpath, sizeof cpath, "%s/calib-%016llx.safetensors", cache_dir, (unsigned long long)key);
        if (k < 0 || (size_t)k >= sizeof cpath) cpath[0] = 0;
    }
    struct stat st;
    if (cpath[0] && stat(cpath, &st) == 0) {
        if (!lsq_model_load(cpath, &lo, out, &le)) {
            res->cache = CALIB_CACHE_HIT;
            if (!(res->file = strdup(cpath))) {
                lsq_model_free(*out);
                *out = NULL;
                return srv_fail(err, errlen, "out of memory");
            }
            srv_log("model %s config %s: calibration cache hit, %s (%d images of %s, split %s)", mm->name, mc->config,
                  cpath, n, cal->path, cal->split);
            return 0;
        }
        srv_log("warning: model %s config %s: the calibration cache %s is unreadable (%s); calibrating again", mm->name,
              mc->config, cpath, le.msg);
    }
    if (cpath[0] && (cache_mkdirs(cache_dir) || access(cache_dir, W_OK))) {
        srv_log("warning: model %s config %s: the cache folder %s is not writable (%s); calibrating in memory, "
              "again at every start",
              mm->name, mc->config, cache_dir, strerror(errno));
        cpath[0] = 0;
    }

    char tpath[PATH_MAX];
    if (temp_path(tpath, sizeof tpath))
        return srv_fail(err, errlen, "%s: cannot create a temporary file %s: %s", where, tpath, strerror(errno));
    int in_memory = !cpath[0];
    double t0 = mono_s();
    lsq_status s = calibrate_to(mm, mc, *data, n, in_memory ? tpath : cpath, in_memory ? NULL : tpath, &in_memory, &le);
    res->seconds = mono_s() - t0;
    const char *loaded = in_memory ? tpath : cpath;
    if (!s) s = lsq_model_load(loaded, &lo, out, &le);
    unlink(tpath); /* mapped by the model when it loaded from there */
    if (s) return srv_fail(err, errlen, "%s: calibrating %s: %s", where, mc->file, le.msg);
    res->cache = in_memory ? CALIB_CACHE_OFF : CALIB_CACHE_MISS;
    if (!in_memory && !(res->file = strdup(cpath))) {
        lsq_model_free(*out);
        *out = NULL;
        return srv_fail(err, errlen, "out of memory");
    }
    srv_log("model %s config %s: calibrated from %s on %d images of %s (split %s) in %.1f s; %s%s", mm->name,
          mc->config, mc->file, n, cal->path, cal->split, res->seconds,
          in_memory ? "no calibration cache, kept in memory" : "calibration cache miss, wrote ",
          in_memory ? "" : cpath);
    return 0;
}
