/* manifest.c - reads and validates manifest.json: models, their configurations and datasets.
 *
 * Paths in the manifest are relative to its folder unless absolute. A model's "extra_configs" are
 * configurations made at start-up from its "fp32" checkpoint by the engine's calibration
 * (server/calibrate.c); they are appended to its configs, marked calibrated, and everything else
 * (lookup, default, report, metrics) treats them as any other configuration. Their names are
 * checked here, so that a typo fails before minutes of calibrating the others. */
#include "manifest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static char *resolve(const char *dir, const char *p)
{
    size_t n = strlen(dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (!r) return NULL;
    if (p[0] == '/') snprintf(r, n, "%s", p);
    else snprintf(r, n, "%s/%s", dir, p);
    return r;
}

/* A name usable in URL paths and Prometheus labels without escaping: [A-Za-z0-9._-], and for
 * configuration names also the '+', '=' and '*' of the engine's suffix grammar (README
 * "Configurations"; legal in a URL path segment; in a query string '+' must be sent as %2B). */
static int valid_name_chars(const char *s, const char *extra)
{
    if (!*s || strlen(s) > 64) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.' || strchr(extra, *s)))
            return 0;
    return 1;
}

static int valid_name(const char *s) { return valid_name_chars(s, ""); }
static int valid_config_name(const char *s) { return valid_name_chars(s, "+=*"); }

static const char *get_str(json_t *obj, const char *key, int required, const char *where, char *err, size_t len,
                           int *bad)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required) *bad = srv_fail(err, len, "%s: missing \"%s\"", where, key);
        return NULL;
    }
    if (!json_is_string(v)) {
        *bad = srv_fail(err, len, "%s: \"%s\" must be a string", where, key);
        return NULL;
    }
    return json_string_value(v);
}

#define DUP(s) ((s) ? strdup(s) : NULL)

/* What the engine's calibration makes: wXaY or wXaY-lsq, X and Y in 2..8, with any suffixes (the
 * grammar of lsq_qconfig_parse, which checks the suffixes in full when it calibrates). */
static int calibratable(const char *c)
{
    int w, a, n = 0;
    if (sscanf(c, "w%1da%1d%n", &w, &a, &n) != 2 || n == 0 || w < 2 || w > 8 || a < 2 || a > 8) return 0;
    if (!strncmp(c + n, "-lsq", 4)) n += 4;
    return c[n] == 0 || (c[n] == '+' && valid_config_name(c));
}

/* "calibration": {"path", "split", "images", "init"}; without it, the dataset's train split. */
static int parse_calibration(json_t *jm, const char *dir, manifest_model *m, int n_extra, const char *where, char *err,
                             size_t len)
{
    int bad = 0;
    json_t *jc = json_object_get(jm, "calibration");
    manifest_calibration *c = &m->calib;
    if (!jc || json_is_null(jc)) {
        if (!n_extra) return 0;
        if (!m->dataset_path)
            return srv_fail(err, len,
                        "%s: \"extra_configs\" needs calibration images: a \"calibration\": {\"path\": ...} entry, "
                        "or a \"dataset\" (its train split is used)",
                        where);
        c->path = strdup(m->dataset_path);
        c->split = strdup("train");
        c->images = 256;
        return c->path && c->split ? 0 : srv_fail(err, len, "out of memory");
    }
    char w2[4600];
    snprintf(w2, sizeof w2, "%s: calibration", where);
    if (!json_is_object(jc)) return srv_fail(err, len, "%s: must be an object", w2);
    const char *path = get_str(jc, "path", 1, w2, err, len, &bad);
    const char *split = get_str(jc, "split", 0, w2, err, len, &bad);
    const char *init = get_str(jc, "init", 0, w2, err, len, &bad);
    if (bad) return -1;
    if (split && strcmp(split, "train") && strcmp(split, "test"))
        return srv_fail(err, len, "%s: \"split\" must be \"train\" or \"test\"", w2);
    if (init && strcmp(init, "mse") && strcmp(init, "minmax") && strcmp(init, "lsq"))
        return srv_fail(err, len, "%s: \"init\" must be \"mse\", \"minmax\" or \"lsq\"", w2);
    json_t *ji = json_object_get(jc, "images");
    if (ji && !(json_is_integer(ji) && json_integer_value(ji) >= 1 && json_integer_value(ji) <= 1000000))
        return srv_fail(err, len, "%s: \"images\" must be an integer in 1..1000000", w2);
    c->path = resolve(dir, path);
    c->split = strdup(split ? split : "train");
    c->init = DUP(init);
    c->images = ji ? (int)json_integer_value(ji) : 256;
    return c->path && c->split && (!init || c->init) ? 0 : srv_fail(err, len, "out of memory");
}

/* Append "extra_configs" to m->configs as calibrated configurations of the "fp32" checkpoint. */
static int parse_extra(json_t *extra, manifest_model *m, const char *where, char *err, size_t len)
{
    int n_extra = (int)json_array_size(extra), fp32 = -1;
    for (int k = 0; k < m->n_configs; k++)
        if (!strcmp(m->configs[k].config, "fp32")) fp32 = k;
    if (fp32 < 0)
        return srv_fail(err, len,
                    "%s: \"extra_configs\" needs an \"fp32\" entry under \"configs\": the FP32 checkpoint they are "
                    "calibrated from",
                    where);
    manifest_config *cs = realloc(m->configs, (size_t)(m->n_configs + n_extra) * sizeof *cs);
    if (!cs) return srv_fail(err, len, "out of memory");
    m->configs = cs;
    int trained = m->n_configs;
    for (int k = 0; k < n_extra; k++) {
        json_t *jx = json_array_get(extra, (size_t)k);
        const char *cn = json_string_value(jx);
        if (!json_is_string(jx)) return srv_fail(err, len, "%s: extra_configs[%d] must be a string", where, k);
        if (!strcmp(cn, "fp32"))
            return srv_fail(err, len, "%s: extra_configs[%d]: \"fp32\" is the checkpoint itself; list quantized "
                                  "configurations (wXaY or wXaY-lsq)", where, k);
        if (!calibratable(cn))
            return srv_fail(err, len, "%s: extra_configs[%d]: unknown configuration \"%.64s\" (calibration makes wXaY or "
                                  "wXaY-lsq, X and Y in 2..8, with suffixes)", where, k, cn);
        for (int j = 0; j < m->n_configs; j++)
            if (!strcmp(m->configs[j].config, cn))
                return srv_fail(err, len, j < trained ? "%s: extra_configs[%d]: \"%s\" is also listed under \"configs\""
                                                  : "%s: extra_configs[%d]: duplicate config \"%s\"", where, k, cn);
        manifest_config *c = &m->configs[m->n_configs];
        *c = (manifest_config){.config = strdup(cn), .file = strdup(m->configs[fp32].file), .calibrated = 1};
        m->n_configs++;
        if (!c->config || !c->file) return srv_fail(err, len, "out of memory");
    }
    return 0;
}

int manifest_load(const char *dir, manifest *out, char *err, size_t len)
{
    memset(out, 0, sizeof *out);
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return srv_fail(err, len, "%s: %s (line %d)", path, je.text, je.line);
    int bad = 0;
    json_t *ver = json_object_get(root, "version"), *models = json_object_get(root, "models");
    if (!json_is_object(root)) bad = srv_fail(err, len, "%s: not a JSON object", path);
    else if (!json_is_integer(ver) || json_integer_value(ver) != 1)
        bad = srv_fail(err, len, "%s: \"version\" must be 1", path);
    else if (!json_is_array(models) || !json_array_size(models))
        bad = srv_fail(err, len, "%s: \"models\" must be a non-empty array", path);
    if (bad) goto done;
    out->dir = strdup(dir);
    out->n_models = (int)json_array_size(models);
    out->models = calloc((size_t)out->n_models, sizeof *out->models);
    if (!out->dir || !out->models) {
        bad = srv_fail(err, len, "out of memory");
        goto done;
    }
    for (int i = 0; i < out->n_models && !bad; i++) {
        json_t *jm = json_array_get(models, (size_t)i);
        manifest_model *m = &out->models[i];
        char where[4400];
        snprintf(where, sizeof where, "%s: models[%d]", path, i);
        if (!json_is_object(jm)) {
            bad = srv_fail(err, len, "%s: not an object", where);
            break;
        }
        const char *name = get_str(jm, "name", 1, where, err, len, &bad);
        const char *arch = get_str(jm, "arch", 0, where, err, len, &bad);
        const char *def = get_str(jm, "default_config", 0, where, err, len, &bad);
        const char *desc = get_str(jm, "description", 0, where, err, len, &bad);
        if (bad) break;
        if (!valid_name(name)) {
            bad = srv_fail(err, len, "%s: name \"%s\" must be 1..64 of [A-Za-z0-9._-]", where, name);
            break;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(out->models[j].name, name)) bad = srv_fail(err, len, "%s: duplicate model name \"%s\"", where, name);
        if (bad) break;
        snprintf(where, sizeof where, "%s: model \"%s\"", path, name);
        m->name = strdup(name);
        m->arch = DUP(arch);
        m->description = strdup(desc ? desc : "");
        json_t *ds = json_object_get(jm, "dataset");
        if (ds && !json_is_null(ds)) {
            if (!json_is_object(ds)) {
                bad = srv_fail(err, len, "%s: \"dataset\" must be an object", where);
                break;
            }
            const char *dn = get_str(ds, "name", 0, where, err, len, &bad);
            const char *dp = get_str(ds, "path", 1, where, err, len, &bad);
            const char *dsplit = get_str(ds, "split", 0, where, err, len, &bad);
            if (bad) break;
            m->dataset_path = resolve(dir, dp);
            m->dataset_name = strdup(dn ? dn : dp);
            m->dataset_split = strdup(dsplit ? dsplit : "test");
        }
        json_t *cfgs = json_object_get(jm, "configs");
        if (!json_is_array(cfgs) || !json_array_size(cfgs)) {
            bad = srv_fail(err, len, "%s: \"configs\" must be a non-empty array", where);
            break;
        }
        m->n_configs = (int)json_array_size(cfgs);
        m->configs = calloc((size_t)m->n_configs, sizeof *m->configs);
        if (!m->configs) {
            bad = srv_fail(err, len, "out of memory");
            break;
        }
        for (int k = 0; k < m->n_configs && !bad; k++) {
            json_t *jc = json_array_get(cfgs, (size_t)k);
            char w2[4600];
            snprintf(w2, sizeof w2, "%s: configs[%d]", where, k);
            if (!json_is_object(jc)) {
                bad = srv_fail(err, len, "%s: not an object", w2);
                break;
            }
            const char *cn = get_str(jc, "config", 1, w2, err, len, &bad);
            const char *file = get_str(jc, "file", 1, w2, err, len, &bad);
            const char *log = get_str(jc, "log", 0, w2, err, len, &bad);
            if (bad) break;
            if (!valid_config_name(cn)) {
                bad = srv_fail(err, len, "%s: config \"%s\" must be 1..64 of [A-Za-z0-9._+=*-]", w2, cn);
                break;
            }
            for (int j = 0; j < k; j++)
                if (!strcmp(m->configs[j].config, cn)) bad = srv_fail(err, len, "%s: duplicate config \"%s\"", w2, cn);
            m->configs[k].config = strdup(cn);
            m->configs[k].file = resolve(dir, file);
            m->configs[k].log = log ? resolve(dir, log) : NULL;
        }
        if (bad) break;
        json_t *extra = json_object_get(jm, "extra_configs");
        if (extra && !json_is_array(extra)) {
            bad = srv_fail(err, len, "%s: \"extra_configs\" must be an array of configuration names", where);
            break;
        }
        int n_extra = extra ? (int)json_array_size(extra) : 0;
        if (n_extra && (bad = parse_extra(extra, m, where, err, len))) break;
        if ((bad = parse_calibration(jm, dir, m, n_extra, where, err, len))) break;
        const char *d = def ? def : m->configs[0].config;
        int found = 0;
        for (int k = 0; k < m->n_configs; k++) found |= !strcmp(m->configs[k].config, d);
        if (!found) {
            bad = srv_fail(err, len, "%s: default_config \"%s\" is not among its configs", where, d);
            break;
        }
        m->default_config = strdup(d);
    }
done:
    json_decref(root);
    if (bad) manifest_free(out);
    return bad;
}

void manifest_free(manifest *m)
{
    for (int i = 0; m->models && i < m->n_models; i++) {
        manifest_model *x = &m->models[i];
        for (int k = 0; x->configs && k < x->n_configs; k++) {
            free(x->configs[k].config);
            free(x->configs[k].file);
            free(x->configs[k].log);
        }
        free(x->configs);
        free(x->name);
        free(x->arch);
        free(x->default_config);
        free(x->description);
        free(x->dataset_name);
        free(x->dataset_path);
        free(x->dataset_split);
        free(x->calib.path);
        free(x->calib.split);
        free(x->calib.init);
    }
    free(m->models);
    free(m->dir);
    memset(m, 0, sizeof *m);
}
