/* manifest.h - the models manifest (models/bundled/manifest.json; format in server/README.md). */
#ifndef LSQ_SERVER_MANIFEST_H
#define LSQ_SERVER_MANIFEST_H

#include <stddef.h>

typedef struct {
    char *config;   /* e.g. "fp32", "w4a4", "w2a2-lsq", "w2a2+pt+dw8" */
    char *file;     /* resolved path of the checkpoint; calibrated: of the FP32 checkpoint it is made from */
    char *log;      /* resolved path of the training log, or NULL */
    int calibrated; /* 0: trained ("configs"); 1: "extra_configs", quantized from file at start-up */
} manifest_config;

/* Where the calibrated configurations' images come from ("calibration", or the dataset's train split). */
typedef struct {
    char *path;  /* resolved; NULL: none (no extra configurations and no "calibration" entry) */
    char *split; /* "train" (default) or "test" */
    int images;  /* how many, spread evenly over the set (default 256) */
    char *init;  /* "mse", "minmax", "lsq", or NULL: the configuration's own */
} manifest_calibration;

typedef struct {
    char *name, *arch, *default_config, *description;
    char *dataset_name, *dataset_path, *dataset_split; /* dataset_path NULL: no dataset */
    manifest_config *configs; /* the trained ones first, then the calibrated ones */
    int n_configs;
    manifest_calibration calib;
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
