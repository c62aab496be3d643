/* calibrate.h - the manifest's extra configurations: a model's FP32 checkpoint quantized at
 * start-up by the engine's calibration (lsq_calib_*, what `lsq quantize` runs), the packed result
 * kept in the cache so that a restart loads it instead of calibrating again. */
#ifndef LSQ_SERVER_CALIBRATE_H
#define LSQ_SERVER_CALIBRATE_H

#include <stddef.h>

#include "lsq.h"
#include "manifest.h"

typedef enum {
    CALIB_CACHE_HIT,  /* loaded from the cache */
    CALIB_CACHE_MISS, /* calibrated now and written to the cache */
    CALIB_CACHE_OFF,  /* calibrated now, in memory: no cache folder, or it is not writable */
} calib_cache;

typedef struct {
    calib_cache cache;
    char *file;        /* the checkpoint loaded (the cache file; malloc'd), NULL when in memory */
    int images, total; /* calibration images used, of the set's size */
    double seconds;    /* calibration time; 0 on a cache hit */
} calib_result;

/* Make mm's calibrated configuration mc (mc->calibrated) and load it into *out. cache_dir: the
 * cache folder or NULL. *data is the model's calibration set, opened on the first call and reused
 * by its other configurations (the caller frees it with lsq_dataset_free). Logs one line per
 * configuration on stderr. -1 with a message naming the manifest, model and configuration. */
int calibrate_load(const manifest *man, const manifest_model *mm, const manifest_config *mc, const char *cache_dir,
                   lsq_dataset **data, lsq_model **out, calib_result *res, char *err, size_t errlen);

const char *calib_cache_to_string(calib_cache c);

#endif
