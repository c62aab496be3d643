/* safetensors.c - read (mmap, validate at open) and write safetensors checkpoints.
 *
 * The reader treats the file as hostile: every length, offset and shape in the header is checked
 * before any tensor byte is touched, so later code can index tensor data without further checks.
 * Beyond the reference implementation's rules we only add a few cheap ones (no empty names).
 * Like the reference, the tensors must tile the data section exactly: no gaps, no overlaps, no
 * trailing bytes, so a file cannot hide a second payload.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* Same cap as the reference implementation (safetensors' MAX_HEADER_SIZE). */
#define LSQ_ST_MAX_HEADER 100000000u

/* ---------------------------------------------------------------------------------------------
 * Dtypes
 * ------------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [LSQ_ST_F32] = {"F32", 4}, [LSQ_ST_F16] = {"F16", 2}, [LSQ_ST_BF16] = {"BF16", 2},
    [LSQ_ST_F64] = {"F64", 8}, [LSQ_ST_I8] = {"I8", 1},   [LSQ_ST_U8] = {"U8", 1},
    [LSQ_ST_I16] = {"I16", 2}, [LSQ_ST_I32] = {"I32", 4}, [LSQ_ST_I64] = {"I64", 8},
    [LSQ_ST_BOOL] = {"BOOL", 1},
};

static int st_dtype_valid(lsq_st_dtype t) { return (unsigned)t < LSQ_ARRAY_LEN(st_dtypes); }

const char *lsq_st_dtype_name(lsq_st_dtype t) { return st_dtype_valid(t) ? st_dtypes[t].name : "?"; }

size_t lsq_st_dtype_size(lsq_st_dtype t) { return st_dtype_valid(t) ? st_dtypes[t].size : 0; }

static int st_dtype_parse(const char *s, lsq_st_dtype *out)
{
    for (size_t i = 0; i < LSQ_ARRAY_LEN(st_dtypes); i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (lsq_st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* numel and byte size of a shape, overflow-checked; both fit in int64_t on success. */
static int st_shape_size(int ndim, const int64_t *shape, size_t elem, int64_t *numel, size_t *nbytes)
{
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || __builtin_mul_overflow(n, (uint64_t)shape[d], &n)) return -1;
    }
    uint64_t b;
    if (n > INT64_MAX || __builtin_mul_overflow(n, (uint64_t)elem, &b) || b > INT64_MAX || b > SIZE_MAX)
        return -1;
    *numel = (int64_t)n;
    *nbytes = (size_t)b;
    return 0;
}

/* "[32, 3, 3, 3]" into buf (truncated if it does not fit). */
static const char *st_shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t off = 0;
    int n = snprintf(buf, len, "[");
    for (int d = 0; d < ndim && n >= 0 && (off += (size_t)n) < len; d++)
        n = snprintf(buf + off, len - off, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (n >= 0 && (off += (size_t)n) < len) snprintf(buf + off, len - off, "]");
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * Reader
 * ------------------------------------------------------------------------------------------- */

struct lsq_st_file {
    char *path;
    const uint8_t *map; /* whole file, read-only */
    size_t size;        /* file bytes */
    json_t *header;     /* parsed header; owns every name, metadata key and value string */
    lsq_st_tensor *tensors; /* (count) in header order */
    int count;
    const lsq_st_tensor **by_name; /* (count) sorted by strcmp(name) for bsearch */
    const char **meta_keys;        /* (meta_count) in header order */
    const char **meta_values;      /* (meta_count) */
    int meta_count;
};

static int st_cmp_by_name(const void *a, const void *b)
{
    return strcmp((*(const lsq_st_tensor *const *)a)->name, (*(const lsq_st_tensor *const *)b)->name);
}

static int st_cmp_by_offset(const void *a, const void *b)
{
    const lsq_st_tensor *x = *(const lsq_st_tensor *const *)a, *y = *(const lsq_st_tensor *const *)b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static uint64_t st_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A JSON integer in [0, INT64_MAX] (jansson rejects integers beyond long long while parsing). */
static int st_json_nonneg(const json_t *j, int64_t *out)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0) return -1;
    *out = (int64_t)json_integer_value(j);
    return 0;
}

static lsq_status st_parse_metadata(lsq_st_file *f, const json_t *meta, lsq_error *err)
{
    if (!json_is_object(meta))
        return lsq_fail(err, LSQ_ERR_FORMAT, "%s: __metadata__ is not a JSON object", f->path);
    size_t n = json_object_size(meta);
    if (n == 0) return LSQ_OK;
    f->meta_keys = calloc(n, sizeof *f->meta_keys);
    f->meta_values = calloc(n, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values) return lsq_fail(err, LSQ_ERR_NOMEM, "%s: out of memory", f->path);
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)meta, key, value) {
        if (!json_is_string(value))
            return lsq_fail(err, LSQ_ERR_FORMAT, "%s: __metadata__ value of '%.160s' is not a string", f->path,
                            key);
        f->meta_keys[f->meta_count] = key;
        f->meta_values[f->meta_count] = json_string_value(value);
        f->meta_count++;
    }
    return LSQ_OK;
}

/* Fill t from one header entry; data offsets are checked against the data section of dsize bytes. */
static lsq_status st_parse_tensor(const lsq_st_file *f, const char *name, const json_t *entry,
                                  const uint8_t *data, uint64_t dsize, lsq_st_tensor *t, lsq_error *err)
{
    const char *p = f->path;
    if (name[0] == '\0') return lsq_fail(err, LSQ_ERR_FORMAT, "%s: a tensor has an empty name", p);
    t->name = name;
    if (!json_is_object(entry))
        return lsq_fail(err, LSQ_ERR_FORMAT, "%s: tensor '%.160s': header entry is not a JSON object", p, name);

    const json_t *jdtype = json_object_get(entry, "dtype");
    if (!jdtype) return lsq_fail(err, LSQ_ERR_FORMAT, "%s: tensor '%.160s': missing \"dtype\"", p, name);
    if (!json_is_string(jdtype))
        return lsq_fail(err, LSQ_ERR_FORMAT, "%s: tensor '%.160s': \"dtype\" is not a string", p, name);
    if (st_dtype_parse(json_string_value(jdtype), &t->dtype) != 0)
        return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s': unknown dtype '%.32s'", p, name,
                        json_string_value(jdtype));

    const json_t *jshape = json_object_get(entry, "shape");
    if (!jshape) return lsq_fail(err, LSQ_ERR_FORMAT, "%s: tensor '%.160s': missing \"shape\"", p, name);
    if (!json_is_array(jshape))
        return lsq_fail(err, LSQ_ERR_FORMAT, "%s: tensor '%.160s': \"shape\" is not an array", p, name);
    if (json_array_size(jshape) > LSQ_ST_MAX_DIMS)
        return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s': %zu dimensions (at most %d supported)", p,
                        name, json_array_size(jshape), LSQ_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(jshape);
    for (int d = 0; d < t->ndim; d++) {
        if (st_json_nonneg(json_array_get(jshape, (size_t)d), &t->shape[d]) != 0)
            return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s': shape[%d] is not a non-negative integer",
                            p, name, d);
    }
    char sbuf[200];
    if (st_shape_size(t->ndim, t->shape, lsq_st_dtype_size(t->dtype), &t->numel, &t->nbytes) != 0)
        return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s': shape %s overflows", p, name,
                        st_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape));

    const json_t *joff = json_object_get(entry, "data_offsets");
    int64_t begin, end;
    if (!joff) return lsq_fail(err, LSQ_ERR_FORMAT, "%s: tensor '%.160s': missing \"data_offsets\"", p, name);
    if (!json_is_array(joff) || json_array_size(joff) != 2 || st_json_nonneg(json_array_get(joff, 0), &begin) ||
        st_json_nonneg(json_array_get(joff, 1), &end))
        return lsq_fail(err, LSQ_ERR_FORMAT,
                        "%s: tensor '%.160s': \"data_offsets\" is not [begin, end] with non-negative integers", p,
                        name);
    if (begin > end)
        return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s': data_offsets [%lld, %lld] has begin > end", p,
                        name, (long long)begin, (long long)end);
    if ((uint64_t)end > dsize)
        return lsq_fail(err, LSQ_ERR_TENSOR,
                        "%s: tensor '%.160s': data_offsets [%lld, %lld] exceed the data section (%llu bytes)", p,
                        name, (long long)begin, (long long)end, (unsigned long long)dsize);
    if ((uint64_t)(end - begin) != t->nbytes)
        return lsq_fail(err, LSQ_ERR_TENSOR,
                        "%s: tensor '%.160s': data_offsets [%lld, %lld] span %lld bytes, but %s %s needs %zu", p,
                        name, (long long)begin, (long long)end, (long long)(end - begin),
                        lsq_st_dtype_name(t->dtype), st_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape),
                        t->nbytes);
    t->data = data + begin;
    return LSQ_OK;
}

/* The tensors must cover [0, dsize) exactly once, in some order. */
static lsq_status st_check_layout(const lsq_st_file *f, const uint8_t *data, uint64_t dsize, lsq_error *err)
{
    const lsq_st_tensor **by_off = malloc((f->count ? (size_t)f->count : 1) * sizeof *by_off);
    if (!by_off) return lsq_fail(err, LSQ_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->count; i++) by_off[i] = &f->tensors[i];
    qsort(by_off, (size_t)f->count, sizeof *by_off, st_cmp_by_offset);
    lsq_status st = LSQ_OK;
    uint64_t pos = 0;
    for (int i = 0; i < f->count; i++) {
        const lsq_st_tensor *t = by_off[i];
        uint64_t begin = (uint64_t)(t->data - data);
        if (begin != pos) {
            st = lsq_fail(err, LSQ_ERR_TENSOR,
                          "%s: tensor '%.160s': data_offsets [%llu, %llu] %s the previous tensor's end (%llu)",
                          f->path, t->name, (unsigned long long)begin, (unsigned long long)(begin + t->nbytes),
                          begin < pos ? "overlap" : "leave a gap after", (unsigned long long)pos);
            goto done;
        }
        pos += t->nbytes;
    }
    if (pos != dsize)
        st = lsq_fail(err, LSQ_ERR_FORMAT, "%s: the tensors cover %llu bytes, but the data section has %llu",
                      f->path, (unsigned long long)pos, (unsigned long long)dsize);
done:
    free(by_off);
    return st;
}

/* jansson quotes a duplicate key in its message only when it is short; recover the key (as
 * escaped JSON text, at most 160 bytes) from the header: the error position is just past its
 * closing quote. NULL when the error is something else. */
static const char *st_duplicate_key(const json_error_t *jerr, const char *text, size_t len, int *klen)
{
    size_t end = (size_t)jerr->position;
    if (json_error_code(jerr) != json_error_duplicate_key || jerr->position < 2 || end > len || text[end - 1] != '"')
        return NULL;
    for (size_t q = end - 1; q-- > 0;) {
        size_t bs = 0;
        while (bs < q && text[q - 1 - bs] == '\\') bs++;
        if (text[q] == '"' && bs % 2 == 0) {
            *klen = (int)LSQ_MIN(end - 2 - q, 160);
            return text + q + 1;
        }
    }
    return NULL;
}

lsq_status lsq_st_open(const char *path, lsq_st_file **out, lsq_error *err)
{
    if (!out) return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_open: out is NULL");
    *out = NULL;
    if (!path) return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_open: path is NULL");

    lsq_status st;
    int fd = -1;
    lsq_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        st = lsq_fail(err, LSQ_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* O_NONBLOCK: a FIFO must not hang us */
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        st = lsq_fail(err, LSQ_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = lsq_fail(err, LSQ_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    if (sb.st_size < 8) {
        st = lsq_fail(err, LSQ_ERR_FORMAT, "%s: file is %lld bytes, too short for a safetensors header", path,
                      (long long)sb.st_size);
        goto fail;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = lsq_fail(err, LSQ_ERR_LIMIT, "%s: file too large to map", path);
        goto fail;
    }
    f->size = (size_t)sb.st_size;
    /* FIXME: a file truncated by another process while mapped raises SIGBUS on access; nothing in
     * the format can guard against that, so checkpoints must not be rewritten in place. */
    void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = lsq_fail(err, LSQ_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    f->map = map;
    close(fd);
    fd = -1;

    uint64_t hlen = st_le64(f->map);
    if (hlen > LSQ_ST_MAX_HEADER) {
        st = lsq_fail(err, LSQ_ERR_FORMAT, "%s: header length %llu exceeds the limit of %u bytes", path,
                      (unsigned long long)hlen, LSQ_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > f->size - 8) {
        st = lsq_fail(err, LSQ_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                      (unsigned long long)hlen, f->size);
        goto fail;
    }
    const uint8_t *data = f->map + 8 + hlen;
    uint64_t dsize = f->size - 8 - hlen;

    /* jansson checks UTF-8, rejects NUL in keys, trailing garbage (padding spaces are fine),
     * integers beyond long long, nesting deeper than JSON_PARSER_MAX_DEPTH and duplicate keys. */
    json_error_t jerr;
    f->header = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!f->header) {
        int klen;
        const char *key = st_duplicate_key(&jerr, (const char *)f->map + 8, (size_t)hlen, &klen);
        if (key)
            st = lsq_fail(err, LSQ_ERR_FORMAT, "%s: duplicate key '%.*s' in the header (at byte %d)", path, klen,
                          key, jerr.position);
        else
            st = lsq_fail(err, LSQ_ERR_FORMAT, "%s: header is not valid JSON: %.200s (at byte %d)", path,
                          jerr.text, jerr.position);
        goto fail;
    }
    if (!json_is_object(f->header)) {
        st = lsq_fail(err, LSQ_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto fail;
    }

    size_t n = json_object_size(f->header); /* bounded by the header limit, so it fits an int */
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) {
        st = lsq_fail(err, LSQ_ERR_NOMEM, "%s: out of memory for %zu tensors", path, n);
        goto fail;
    }
    const char *key;
    json_t *value;
    json_object_foreach(f->header, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            st = st_parse_metadata(f, value, err);
        } else {
            st = st_parse_tensor(f, key, value, data, dsize, &f->tensors[f->count], err);
            f->by_name[f->count] = &f->tensors[f->count];
            f->count++;
        }
        if (st != LSQ_OK) goto fail;
    }
    if ((st = st_check_layout(f, data, dsize, err)) != LSQ_OK) goto fail;
    /* jansson already rejected duplicate keys, so names are unique. */
    qsort(f->by_name, (size_t)f->count, sizeof *f->by_name, st_cmp_by_name);
    *out = f;
    return LSQ_OK;

fail:
    if (fd >= 0) close(fd);
    lsq_st_close(f);
    return st;
}

void lsq_st_close(lsq_st_file *f)
{
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->size);
    json_decref(f->header);
    free(f->tensors);
    free(f->by_name);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}

const char *lsq_st_path(const lsq_st_file *f) { return f->path; }
int64_t lsq_st_file_size(const lsq_st_file *f) { return (int64_t)f->size; }
int lsq_st_count(const lsq_st_file *f) { return f->count; }

const lsq_st_tensor *lsq_st_get(const lsq_st_file *f, int i)
{
    return i >= 0 && i < f->count ? &f->tensors[i] : NULL;
}

const lsq_st_tensor *lsq_st_find(const lsq_st_file *f, const char *name)
{
    if (!name || f->count == 0) return NULL;
    lsq_st_tensor key = {.name = name};
    const lsq_st_tensor *pkey = &key;
    const lsq_st_tensor **hit = bsearch(&pkey, f->by_name, (size_t)f->count, sizeof *f->by_name, st_cmp_by_name);
    return hit ? *hit : NULL;
}

const char *lsq_st_metadata(const lsq_st_file *f, const char *key)
{
    for (int i = 0; key && i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

int lsq_st_metadata_count(const lsq_st_file *f) { return f->meta_count; }

const char *lsq_st_metadata_key(const lsq_st_file *f, int i)
{
    return i >= 0 && i < f->meta_count ? f->meta_keys[i] : NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Conversion to float32 (portable: byte loads, so unaligned data and any host float ABI work)
 * ------------------------------------------------------------------------------------------- */

static float st_f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* IEEE binary16 -> binary32, exact (every half is a float): subnormals are renormalised, inf
 * stays inf, NaN keeps its payload (quiet bit included). */
static float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return st_f32_from_bits(sign | 0x7f800000u | mant << 13);
    if (exp != 0) return st_f32_from_bits(sign | (exp + 112) << 23 | mant << 13);
    if (mant == 0) return st_f32_from_bits(sign);
    /* subnormal: mant * 2^-24; shift the leading one up to the implicit bit */
    uint32_t e = 113;
    while (!(mant & 0x400)) {
        mant <<= 1;
        e--;
    }
    return st_f32_from_bits(sign | e << 23 | (mant & 0x3ff) << 13);
}

static float st_bf16_to_f32(uint16_t h) { return st_f32_from_bits((uint32_t)h << 16); }

static uint16_t st_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t st_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Exposed for the unit tests through their own prototypes (not part of the header's API). */
float lsq_st_f16_to_f32(uint16_t h);
float lsq_st_bf16_to_f32(uint16_t h);
float lsq_st_f16_to_f32(uint16_t h) { return st_f16_to_f32(h); }
float lsq_st_bf16_to_f32(uint16_t h) { return st_bf16_to_f32(h); }

lsq_status lsq_st_read_f32(const lsq_st_file *f, const char *name, int ndim, const int64_t *shape, float *dst,
                           lsq_error *err)
{
    if (!f || !name || ndim < 0 || ndim > LSQ_ST_MAX_DIMS || (ndim > 0 && !shape))
        return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_read_f32: invalid arguments");
    const lsq_st_tensor *t = lsq_st_find(f, name);
    if (!t) return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s' is missing", f->path, name);

    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char want[160], have[160];
        return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s': expected %s, found %s", f->path, name,
                        st_shape_str(want, sizeof want, ndim, shape),
                        st_shape_str(have, sizeof have, t->ndim, t->shape));
    }
    if (t->numel > 0 && !dst) return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_read_f32: dst is NULL");

    const uint8_t *src = t->data;
    int64_t n = t->numel;
    const char *what = NULL;
    int64_t bad = 0;
    switch (t->dtype) {
    case LSQ_ST_F32:
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = st_le32(src + 4 * i);
            if ((u & 0x7f800000u) == 0x7f800000u) {
                what = u & 0x7fffff ? "NaN" : "infinite";
                bad = i;
                break;
            }
            dst[i] = st_f32_from_bits(u);
        }
        break;
    case LSQ_ST_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = st_le16(src + 2 * i);
            if ((h & 0x7c00) == 0x7c00) {
                what = h & 0x3ff ? "NaN" : "infinite";
                bad = i;
                break;
            }
            dst[i] = st_f16_to_f32(h);
        }
        break;
    case LSQ_ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = st_le16(src + 2 * i);
            if ((h & 0x7f80) == 0x7f80) {
                what = h & 0x7f ? "NaN" : "infinite";
                bad = i;
                break;
            }
            dst[i] = st_bf16_to_f32(h);
        }
        break;
    case LSQ_ST_F64:
        for (int64_t i = 0; i < n; i++) {
            uint64_t u = (uint64_t)st_le32(src + 8 * i + 4) << 32 | st_le32(src + 8 * i);
            double x;
            memcpy(&x, &u, sizeof x);
            if ((u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull) {
                what = u & 0xfffffffffffffull ? "NaN" : "infinite";
            } else if (x > FLT_MAX || x < -FLT_MAX) {
                what = "outside the float32 range"; /* converting it would be undefined behaviour */
            }
            if (what) {
                bad = i;
                break;
            }
            dst[i] = (float)x;
        }
        break;
    default:
        return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s' has dtype %s, expected a float type", f->path,
                        name, lsq_st_dtype_name(t->dtype));
    }
    if (what)
        return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%.160s': element %lld is %s", f->path, name,
                        (long long)bad, what);
    return LSQ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    char *name;
    lsq_st_dtype dtype;
    int ndim;
    int64_t shape[LSQ_ST_MAX_DIMS];
    uint8_t *data; /* (nbytes) private copy */
    size_t nbytes;
} st_wtensor;

typedef struct {
    char *key, *value;
} st_wmeta;

struct lsq_st_writer {
    st_wtensor *tensors; /* (count) in insertion order = header order = data order */
    int count, cap;
    st_wmeta *meta; /* (meta_count) in insertion order */
    int meta_count, meta_cap;
};

lsq_st_writer *lsq_st_writer_create(void) { return calloc(1, sizeof(lsq_st_writer)); }

void lsq_st_writer_free(lsq_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->count; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    for (int i = 0; i < w->meta_count; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->tensors);
    free(w->meta);
    free(w);
}

/* Grow *arr (of elem-sized items) so that it holds at least need items. */
static int st_grow(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap) return 0;
    int ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > INT32_MAX / 2) return -1;
        ncap *= 2;
    }
    size_t bytes;
    if (lsq_mul_size((size_t)ncap, elem, &bytes) != 0) return -1;
    void *p = realloc(*arr, bytes);
    if (!p) return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* Names and metadata must survive a JSON round trip unchanged: valid UTF-8 (jansson checks). */
static int st_utf8_ok(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

lsq_status lsq_st_writer_add(lsq_st_writer *w, const char *name, lsq_st_dtype dtype, int ndim,
                             const int64_t *shape, const void *data, lsq_error *err)
{
    if (!w || !name) return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_add: writer or name is NULL");
    if (name[0] == '\0' || strcmp(name, "__metadata__") == 0 || !st_utf8_ok(name))
        return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_add: invalid tensor name '%.160s'", name);
    if (!st_dtype_valid(dtype))
        return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_add: tensor '%.160s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > LSQ_ST_MAX_DIMS || (ndim > 0 && !shape))
        return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_add: tensor '%.160s': invalid ndim %d", name, ndim);
    int64_t numel;
    size_t nbytes;
    if (st_shape_size(ndim, shape, lsq_st_dtype_size(dtype), &numel, &nbytes) != 0)
        return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_add: tensor '%.160s': negative or overflowing shape",
                        name);
    if (nbytes > 0 && !data)
        return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_add: tensor '%.160s': data is NULL", name);
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_add: tensor '%.160s' added twice", name);

    if (st_grow((void **)&w->tensors, &w->cap, w->count + 1, sizeof *w->tensors) != 0)
        return lsq_fail(err, LSQ_ERR_NOMEM, "lsq_st_writer_add: out of memory");
    st_wtensor *t = &w->tensors[w->count];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return lsq_fail(err, LSQ_ERR_NOMEM, "lsq_st_writer_add: tensor '%.160s': out of memory", name);
    }
    if (nbytes) memcpy(t->data, data, nbytes);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->nbytes = nbytes;
    w->count++;
    return LSQ_OK;
}

lsq_status lsq_st_writer_set_metadata(lsq_st_writer *w, const char *key, const char *value, lsq_error *err)
{
    if (!w || !key || !value) return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_set_metadata: NULL argument");
    if (!st_utf8_ok(key) || !st_utf8_ok(value))
        return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_set_metadata: '%.160s' is not valid UTF-8", key);
    char *v = strdup(value);
    if (!v) return lsq_fail(err, LSQ_ERR_NOMEM, "lsq_st_writer_set_metadata: out of memory");
    for (int i = 0; i < w->meta_count; i++) {
        if (strcmp(w->meta[i].key, key) == 0) { /* replace, keeping the key's first position */
            free(w->meta[i].value);
            w->meta[i].value = v;
            return LSQ_OK;
        }
    }
    char *k = strdup(key);
    if (!k || st_grow((void **)&w->meta, &w->meta_cap, w->meta_count + 1, sizeof *w->meta) != 0) {
        free(k);
        free(v);
        return lsq_fail(err, LSQ_ERR_NOMEM, "lsq_st_writer_set_metadata: out of memory");
    }
    w->meta[w->meta_count++] = (st_wmeta){k, v};
    return LSQ_OK;
}

/* Header JSON: "__metadata__" first (when there is any), then the tensors in insertion order;
 * jansson keeps object keys in insertion order, so the output is deterministic. */
static json_t *st_build_header(const lsq_st_writer *w)
{
    json_t *root = json_object();
    if (!root) return NULL;
    if (w->meta_count > 0) {
        json_t *meta = json_object();
        if (json_object_set_new(root, "__metadata__", meta) != 0) goto fail;
        for (int i = 0; i < w->meta_count; i++)
            if (json_object_set_new(meta, w->meta[i].key, json_string(w->meta[i].value)) != 0) goto fail;
    }
    size_t off = 0;
    for (int i = 0; i < w->count; i++) {
        const st_wtensor *t = &w->tensors[i];
        /* each node joins its parent as soon as it exists (the _new calls take the reference even
         * when they fail), so root owns everything and one decref cleans up */
        json_t *e = json_object(), *shape, *offs;
        if (json_object_set_new(root, t->name, e) != 0 ||
            json_object_set_new(e, "dtype", json_string(lsq_st_dtype_name(t->dtype))) != 0 ||
            json_object_set_new(e, "shape", shape = json_array()) != 0 ||
            json_object_set_new(e, "data_offsets", offs = json_array()) != 0 ||
            json_array_append_new(offs, json_integer((json_int_t)off)) != 0 ||
            json_array_append_new(offs, json_integer((json_int_t)(off + t->nbytes))) != 0)
            goto fail;
        for (int d = 0; d < t->ndim; d++)
            if (json_array_append_new(shape, json_integer(t->shape[d])) != 0) goto fail;
        off += t->nbytes;
    }
    return root;
fail:
    json_decref(root);
    return NULL;
}

static int st_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

lsq_status lsq_st_writer_save(lsq_st_writer *w, const char *path, lsq_error *err)
{
    if (!w || !path) return lsq_fail(err, LSQ_ERR_ARG, "lsq_st_writer_save: writer or path is NULL");
    lsq_status st;
    int fd = -1, created = 0;
    char *tmp = NULL, *json = NULL;
    uint8_t *head = NULL;

    uint64_t total = 0;
    for (int i = 0; i < w->count; i++) {
        if (__builtin_add_overflow(total, (uint64_t)w->tensors[i].nbytes, &total) || total > INT64_MAX) {
            st = lsq_fail(err, LSQ_ERR_LIMIT, "%s: tensors exceed the maximum file size", path);
            goto fail;
        }
    }
    json_t *root = st_build_header(w);
    json = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    size_t plen = strlen(path);
    tmp = malloc(plen + 5);
    if (!json || !tmp) {
        st = lsq_fail(err, LSQ_ERR_NOMEM, "%s: out of memory building the header", path);
        goto fail;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    /* Pad with spaces to a multiple of 8, as the reference writer does, so data starts aligned. */
    size_t jlen = strlen(json), hlen = (jlen + 7) & ~(size_t)7;
    if (hlen > LSQ_ST_MAX_HEADER) {
        st = lsq_fail(err, LSQ_ERR_LIMIT, "%s: header of %zu bytes exceeds the limit of %u", path, hlen,
                      LSQ_ST_MAX_HEADER);
        goto fail;
    }
    head = malloc(8 + hlen);
    if (!head) {
        st = lsq_fail(err, LSQ_ERR_NOMEM, "%s: out of memory building the header", path);
        goto fail;
    }
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(head + 8, json, jlen);
    memset(head + 8 + jlen, ' ', hlen - jlen);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = lsq_fail(err, LSQ_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    created = 1;
    int bad = st_write_all(fd, head, 8 + hlen);
    for (int i = 0; !bad && i < w->count; i++) bad = st_write_all(fd, w->tensors[i].data, w->tensors[i].nbytes);
    /* fsync before rename: otherwise a crash can leave an empty file under the final name */
    if (bad || fsync(fd) != 0) {
        st = lsq_fail(err, LSQ_ERR_IO, "%s: write: %s", tmp, strerror(errno));
        goto fail;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0 || rename(tmp, path) != 0) {
        st = lsq_fail(err, LSQ_ERR_IO, "%s: %s", rc ? tmp : path, strerror(errno));
        goto fail;
    }
    free(tmp);
    free(json);
    free(head);
    return LSQ_OK;

fail:
    if (fd >= 0) close(fd);
    if (created) unlink(tmp);
    free(tmp);
    free(json);
    free(head);
    return st;
}
