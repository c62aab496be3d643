/* models.h - the served (model, configuration) pairs: loaded engine models and their lookup. */
#ifndef LSQ_SERVER_MODELS_H
#define LSQ_SERVER_MODELS_H

#include <stdint.h>

#include "calibrate.h"
#include "lsq.h"
#include "manifest.h"

typedef struct {
    int id;                     /* index in registry.entries */
    const manifest_model *mm;   /* the family */
    const manifest_config *mc;  /* this configuration */
    lsq_model *model;           /* immutable, shared by every worker */
    const char *file;           /* the checkpoint loaded: mc->file, or for a calibrated configuration the
                                   cache file (calib.file); NULL when calibrated in memory */
    calib_result calib;         /* mc->calibrated: how it was made */
    int input_size, classes;
    int wbits, abits;           /* 32/32 for fp32 */
    int64_t file_bytes;
    int is_default;
} model_entry;

typedef struct {
    manifest man;
    model_entry *entries;
    int n;
} model_registry;

/* Load every configuration of the manifest in dir, calibrating its extra configurations (through
 * cache_dir, the cache folder, or NULL for none). -1 with a message on failure. */
int registry_load(model_registry *r, const char *dir, const char *cache_dir, char *err, size_t errlen);
void registry_free(model_registry *r);

/* config NULL or "" = the model's default. Returns NULL when unknown; *model_known tells which
 * part was wrong (for the 404 message). */
const model_entry *registry_find(const model_registry *r, const char *model, const char *config, int *model_known);

/* "trained" (a checkpoint of the manifest's configs) or "calibrated" (extra_configs, made at start-up). */
const char *registry_source(const model_entry *e);

#endif
