/* manifest.h - the models manifest (models/bundled/manifest.json; format in server/README.md). */
#ifndef LSQ_SERVER_MANIFEST_H
#define LSQ_SERVER_MANIFEST_H

#include <stddef.h>

typedef struct {
    char *config; /* e.g. "fp32", "w4a4", "w2a2-lsq", "w2a2+pt+dw8" */
    char *file;   /* resolved path of the checkpoint */
    char *log;    /* resolved path of the training log, or NULL */
} manifest_config;

typedef struct {
    char *name, *arch, *default_config, *description;
    char *dataset_name, *dataset_path, *dataset_split; /* dataset_path NULL: no dataset */
    manifest_config *configs;
    int n_configs;
} manifest_model;

typedef struct {
    char *dir; /* the manifest's folder; relative paths resolve against it */
    manifest_model *models;
    int n_models;
} manifest;

/* Parse DIR/manifest.json. On failure returns -1 with a message naming the file and field. */
int manifest_load(const char *dir, manifest *out, char *err, size_t errlen);
void manifest_free(manifest *m);

#endif
