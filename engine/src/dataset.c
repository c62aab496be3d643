/* dataset.c - labelled image sets for evaluation and calibration: IDX files (MNIST/Fashion-MNIST,
 * gzipped or not), a folder per class, or a flat folder of images with a labels file.
 *
 *   IDX      a directory holding <prefix>-images-idx3-ubyte[.gz] and <prefix>-labels-idx1-ubyte[.gz]
 *            (t10k = the test split is preferred over train); grey images become RGB with R=G=B
 *   classes  a directory of sub-directories, one per class, sorted by name; images inside sorted
 *   labels   a directory of images plus labels.txt: "<file name> <class index>" per line (the form
 *            ImageNet validation sets are usually converted to)
 * Images are decoded on demand (lsq_dataset_get), so a large folder costs only its file list.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "lsq.h"
#include "util.h"

struct lsq_dataset {
    int n, num_classes;
    int *labels;
    char **files;       /* per item (folder forms), or NULL */
    uint8_t *pixels;    /* IDX: n * rows * cols grey bytes */
    int rows, cols;
    char **class_names; /* num_classes, or NULL */
    char desc[256];
};

/* ==== IDX ====================================================================================== */

/* Reads a whole (gzipped or plain: gzread handles both) file, at most max bytes. */
static lsq_status read_gz(const char *path, size_t max, uint8_t **out, size_t *len, lsq_error *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return lsq_fail(err, LSQ_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            gzclose(f);
            return lsq_fail(err, LSQ_ERR_NOMEM, "%s: out of memory", path);
        }
        int r = gzread(f, buf + n, (unsigned)(cap - n));
        if (r < 0) {
            int code;
            const char *m = gzerror(f, &code);
            lsq_status s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: %s", path, m);
            free(buf);
            gzclose(f);
            return s;
        }
        n += (size_t)r;
        if (r == 0) break;
        if (n == cap) {
            if (cap >= max) {
                free(buf);
                gzclose(f);
                return lsq_fail(err, LSQ_ERR_LIMIT, "%s: larger than %zu bytes", path, max);
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    gzclose(f);
    *out = buf;
    *len = n;
    return LSQ_OK;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int find_file(const char *dir, const char *prefix, const char *kind, char *out, size_t len)
{
    const char *exts[] = {"", ".gz"};
    for (int e = 0; e < 2; e++) {
        snprintf(out, len, "%s/%s-%s%s", dir, prefix, kind, exts[e]);
        struct stat st;
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
    }
    return 0;
}

static lsq_status open_idx(lsq_dataset *d, const char *dir, const char *prefix, lsq_error *err)
{
    char ip[1024], lp[1024];
    find_file(dir, prefix, "images-idx3-ubyte", ip, sizeof ip);
    find_file(dir, prefix, "labels-idx1-ubyte", lp, sizeof lp);
    uint8_t *img = NULL, *lab = NULL;
    size_t ni, nl;
    lsq_status s;
    if ((s = read_gz(ip, (size_t)1 << 31, &img, &ni, err)) || (s = read_gz(lp, (size_t)1 << 28, &lab, &nl, err)))
        goto done;
    if (ni < 16 || be32(img) != 0x803 || nl < 8 || be32(lab) != 0x801) {
        s = lsq_fail(err, LSQ_ERR_FORMAT, "%s / %s: not IDX image (magic 0x803) and label (0x801) files", ip, lp);
        goto done;
    }
    uint32_t n = be32(img + 4), rows = be32(img + 8), cols = be32(img + 12);
    if (be32(lab + 4) != n || rows == 0 || cols == 0 || rows > 4096 || cols > 4096 || n > (1u << 24) ||
        ni != 16 + (size_t)n * rows * cols || nl != 8 + (size_t)n) {
        s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: header says %u images of %ux%u and %u labels, sizes do not match", ip, n,
                     rows, cols, be32(lab + 4));
        goto done;
    }
    d->n = (int)n;
    d->rows = (int)rows;
    d->cols = (int)cols;
    d->labels = malloc((size_t)n * sizeof(int));
    d->pixels = malloc((size_t)n * rows * cols);
    if (!d->labels || !d->pixels) {
        s = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(d->pixels, img + 16, (size_t)n * rows * cols);
    for (uint32_t i = 0; i < n; i++) {
        d->labels[i] = lab[8 + i];
        if (d->labels[i] + 1 > d->num_classes) d->num_classes = d->labels[i] + 1;
    }
    snprintf(d->desc, sizeof d->desc, "%s (IDX, %s split, %d images of %dx%d)", dir, prefix, d->n, d->cols, d->rows);
done:
    free(img);
    free(lab);
    return s;
}

/* ==== folders ================================================================================== */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names of the entries of dir that are directories (want_dirs) or regular files. */
static lsq_status list_dir(const char *dir, int want_dirs, char ***out, int *count, lsq_error *err)
{
    DIR *dp = opendir(dir);
    if (!dp) return lsq_fail(err, LSQ_ERR_IO, "%s: %s", dir, strerror(errno));
    char **v = NULL;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        if (de->d_name[0] == '.') continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || (want_dirs ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))) continue;
        if (n == cap) {
            char **nv = realloc(v, (size_t)(cap = cap ? cap * 2 : 64) * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        if (!(v[n] = strdup(de->d_name))) break;
        n++;
    }
    closedir(dp);
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    *count = n;
    return LSQ_OK;
}

static void free_list(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int is_image_name(const char *s)
{
    const char *e = strrchr(s, '.');
    return e && (!strcasecmp(e, ".jpg") || !strcasecmp(e, ".jpeg") || !strcasecmp(e, ".png") || !strcasecmp(e, ".webp"));
}

static lsq_status add_item(lsq_dataset *d, int *cap, const char *path, int label, lsq_error *err)
{
    if (d->n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        char **nf = realloc(d->files, (size_t)*cap * sizeof *nf);
        if (nf) d->files = nf;
        int *nl = realloc(d->labels, (size_t)*cap * sizeof *nl);
        if (nl) d->labels = nl;
        if (!nf || !nl) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    }
    if (!(d->files[d->n] = strdup(path))) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    d->labels[d->n++] = label;
    return LSQ_OK;
}

static lsq_status open_class_folders(lsq_dataset *d, const char *dir, char **classes, int nc, lsq_error *err)
{
    int cap = 0;
    lsq_status s = LSQ_OK;
    d->class_names = classes;
    d->num_classes = nc;
    for (int c = 0; c < nc && !s; c++) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", dir, classes[c]);
        char **files;
        int nf;
        if ((s = list_dir(sub, 0, &files, &nf, err))) break;
        for (int i = 0; i < nf && !s; i++) {
            if (!is_image_name(files[i])) continue;
            char p[8192];
            snprintf(p, sizeof p, "%s/%s", sub, files[i]);
            s = add_item(d, &cap, p, c, err);
        }
        free_list(files, nf);
    }
    snprintf(d->desc, sizeof d->desc, "%s (%d class folders, %d images)", dir, nc, d->n);
    return s;
}

static lsq_status open_labels_file(lsq_dataset *d, const char *dir, const char *labels_path, lsq_error *err)
{
    FILE *f = fopen(labels_path, "r");
    if (!f) return lsq_fail(err, LSQ_ERR_IO, "%s: %s", labels_path, strerror(errno));
    char line[4096], name[2048];
    int cap = 0, lineno = 0, label;
    lsq_status s = LSQ_OK;
    while (!s && fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[strspn(line, " \t\r\n")] == 0) continue;
        if (sscanf(line, "%2047s %d", name, &label) != 2 || label < 0 || label > 1000000) {
            s = lsq_fail(err, LSQ_ERR_FORMAT, "%s:%d: expected '<file name> <class index>'", labels_path, lineno);
            break;
        }
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        if ((s = add_item(d, &cap, p, label, err))) break;
        if (label + 1 > d->num_classes) d->num_classes = label + 1;
    }
    fclose(f);
    snprintf(d->desc, sizeof d->desc, "%s (labels file, %d images)", dir, d->n);
    return s;
}

/* ==== public =================================================================================== */

lsq_status lsq_dataset_open(const char *path, const char *split, lsq_dataset **out, lsq_error *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return lsq_fail(err, LSQ_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return lsq_fail(err, LSQ_ERR_ARG, "%s: a dataset is a directory", path);
    lsq_dataset *d = calloc(1, sizeof *d);
    if (!d) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    char probe[1024], labels[1024];
    const char *prefixes[2] = {"t10k", "train"};
    if (split && !strcmp(split, "train")) prefixes[0] = "train", prefixes[1] = "t10k";
    lsq_status s = LSQ_ERR_FORMAT;
    int found = 0;
    for (int i = 0; i < 2 && !found; i++)
        if (find_file(path, prefixes[i], "images-idx3-ubyte", probe, sizeof probe)) {
            found = 1;
            s = open_idx(d, path, prefixes[i], err);
        }
    snprintf(labels, sizeof labels, "%s/labels.txt", path);
    if (!found && stat(labels, &st) == 0) {
        found = 1;
        s = open_labels_file(d, path, labels, err);
    }
    if (!found) {
        char **classes;
        int nc;
        if (!(s = list_dir(path, 1, &classes, &nc, err))) {
            if (nc > 0) {
                found = 1;
                s = open_class_folders(d, path, classes, nc, err);
            } else {
                free_list(classes, nc);
            }
        }
    }
    if (!s && !found)
        s = lsq_fail(err, LSQ_ERR_FORMAT,
                     "%s: not a dataset (expected IDX files, a labels.txt beside the images, or one folder per class)",
                     path);
    if (!s && d->n == 0) s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: no images", path);
    if (s) {
        lsq_dataset_free(d);
        return s;
    }
    *out = d;
    return LSQ_OK;
}

void lsq_dataset_free(lsq_dataset *d)
{
    if (!d) return;
    if (d->files)
        for (int i = 0; i < d->n; i++) free(d->files[i]);
    free(d->files);
    free(d->labels);
    free(d->pixels);
    if (d->class_names) free_list(d->class_names, d->num_classes);
    free(d);
}

int lsq_dataset_size(const lsq_dataset *d) { return d->n; }
int lsq_dataset_num_classes(const lsq_dataset *d) { return d->num_classes; }
int lsq_dataset_label(const lsq_dataset *d, int i) { return i >= 0 && i < d->n ? d->labels[i] : -1; }
const char *lsq_dataset_describe(const lsq_dataset *d) { return d->desc; }
const char *lsq_dataset_class_name(const lsq_dataset *d, int c)
{
    return d->class_names && c >= 0 && c < d->num_classes ? d->class_names[c] : NULL;
}

lsq_status lsq_dataset_get(const lsq_dataset *d, int i, lsq_image *img, lsq_error *err)
{
    memset(img, 0, sizeof *img);
    if (i < 0 || i >= d->n) return lsq_fail(err, LSQ_ERR_ARG, "dataset item %d out of range (%d items)", i, d->n);
    if (d->files) return lsq_image_load(d->files[i], NULL, img, err);
    size_t np = (size_t)d->rows * d->cols;
    img->rgb = malloc(np * 3);
    if (!img->rgb) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    img->width = d->cols;
    img->height = d->rows;
    const uint8_t *g = d->pixels + (size_t)i * np;
    for (size_t p = 0; p < np; p++) img->rgb[3 * p] = img->rgb[3 * p + 1] = img->rgb[3 * p + 2] = g[p];
    return LSQ_OK;
}
