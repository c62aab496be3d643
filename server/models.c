/* models.c - loads every configuration listed in the manifest through the engine; the calibrated ones
 * (extra_configs) through calibrate.c. */
#include "models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "w4a4", "w2a2-lsq", "w2a2+dw8" -> the inner layers' bits (suffixes may change some layers'); fp32 and
 * anything else float -> 32 */
static void config_bits(const char *c, int *w, int *a)
{
    int x, y;
    *w = *a = 32;
    if (sscanf(c, "w%da%d", &x, &y) == 2 && x > 0 && x <= 32 && y > 0 && y <= 32) *w = x, *a = y;
}

int registry_load(model_registry *r, const char *dir, const char *cache_dir, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (manifest_load(dir, &r->man, err, errlen)) return -1;
    int n = 0;
    for (int i = 0; i < r->man.n_models; i++) n += r->man.models[i].n_configs;
    r->entries = calloc((size_t)n, sizeof *r->entries);
    if (!r->entries) {
        snprintf(err, errlen, "out of memory");
        registry_free(r);
        return -1;
    }
    for (int i = 0; i < r->man.n_models; i++) {
        const manifest_model *mm = &r->man.models[i];
        lsq_dataset *calib_data = NULL; /* opened by the first calibrated configuration */
        for (int k = 0; k < mm->n_configs; k++) {
            model_entry *e = &r->entries[r->n];
            e->id = r->n;
            e->mm = mm;
            e->mc = &mm->configs[k];
            if (e->mc->calibrated) {
                if (calibrate_load(&r->man, mm, e->mc, cache_dir, &calib_data, &e->model, &e->calib, err, errlen)) {
                    lsq_dataset_free(calib_data);
                    registry_free(r);
                    return -1;
                }
                e->file = e->calib.file;
            } else {
                lsq_error le = {{0}};
                lsq_load_options lo = {.arch = mm->arch, .config = e->mc->config};
                if (lsq_model_load(e->mc->file, &lo, &e->model, &le)) {
                    snprintf(err, errlen, "model \"%s\" config \"%s\": %s", mm->name, e->mc->config, le.msg);
                    lsq_dataset_free(calib_data);
                    registry_free(r);
                    return -1;
                }
                e->file = e->mc->file;
            }
            r->n++;
            e->input_size = lsq_model_preprocess(e->model)->input_size;
            e->classes = lsq_model_num_classes(e->model);
            e->file_bytes = lsq_model_file_bytes(e->model);
            e->is_default = !strcmp(mm->default_config, e->mc->config);
            config_bits(e->mc->config, &e->wbits, &e->abits);
        }
        lsq_dataset_free(calib_data);
    }
    return 0;
}

void registry_free(model_registry *r)
{
    for (int i = 0; i < r->n; i++) {
        lsq_model_free(r->entries[i].model);
        free(r->entries[i].calib.file);
    }
    free(r->entries);
    manifest_free(&r->man);
    memset(r, 0, sizeof *r);
}

const model_entry *registry_find(const model_registry *r, const char *model, const char *config, int *model_known)
{
    *model_known = 0;
    if (!model) return NULL;
    for (int i = 0; i < r->n; i++) {
        const model_entry *e = &r->entries[i];
        if (strcmp(e->mm->name, model)) continue;
        *model_known = 1;
        if (config && *config ? !strcmp(e->mc->config, config) : e->is_default) return e;
    }
    return NULL;
}

const char *registry_source(const model_entry *e)
{
    return e->mc->calibrated ? "calibrated" : "trained";
}
