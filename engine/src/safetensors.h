/* safetensors.h - reader and writer for the safetensors checkpoint format (private to the engine).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"key": "string", ...}, "name": {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the raw little-endian tensor bytes; offsets are relative to the end of the header.
 *
 * The reader mmaps the file read-only and validates the whole header at open: every tensor's
 * dtype, shape (non-negative, product without overflow), byte length = product * dtype size, and
 * offsets inside the file. Tensor data pointers stay valid until lsq_st_close().
 */
#ifndef LSQ_SAFETENSORS_H
#define LSQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "lsq.h"

typedef enum {
    LSQ_ST_F32 = 0,
    LSQ_ST_F16,
    LSQ_ST_BF16,
    LSQ_ST_F64,
    LSQ_ST_I8,
    LSQ_ST_U8,
    LSQ_ST_I16,
    LSQ_ST_I32,
    LSQ_ST_I64,
    LSQ_ST_BOOL,
} lsq_st_dtype;

#define LSQ_ST_MAX_DIMS 8

typedef struct {
    const char *name;
    lsq_st_dtype dtype;
    int ndim;
    int64_t shape[LSQ_ST_MAX_DIMS];
    int64_t numel;
    const uint8_t *data; /* into the mapping; not aligned in general */
    size_t nbytes;
} lsq_st_tensor;

typedef struct lsq_st_file lsq_st_file;

const char *lsq_st_dtype_name(lsq_st_dtype t);
size_t lsq_st_dtype_size(lsq_st_dtype t);

lsq_status lsq_st_open(const char *path, lsq_st_file **out, lsq_error *err);
void lsq_st_close(lsq_st_file *f);

const char *lsq_st_path(const lsq_st_file *f);
int64_t lsq_st_file_size(const lsq_st_file *f);
int lsq_st_count(const lsq_st_file *f);
const lsq_st_tensor *lsq_st_get(const lsq_st_file *f, int i);             /* in header order */
const lsq_st_tensor *lsq_st_find(const lsq_st_file *f, const char *name); /* NULL if absent */
const char *lsq_st_metadata(const lsq_st_file *f, const char *key);       /* NULL if absent */
int lsq_st_metadata_count(const lsq_st_file *f);
const char *lsq_st_metadata_key(const lsq_st_file *f, int i);

/* Copy tensor `name` into dst as float32, converting F32/F16/BF16 (and F64). The tensor must exist
 * and have exactly the given shape; otherwise the error names the file, the tensor, and what was
 * expected vs found. NaN/Inf values are rejected (they are never a valid weight). */
lsq_status lsq_st_read_f32(const lsq_st_file *f, const char *name, int ndim, const int64_t *shape, float *dst,
                           lsq_error *err);

/* Writer: collect tensors (data is copied) and metadata, then save atomically (temp file +
 * rename). */
typedef struct lsq_st_writer lsq_st_writer;
lsq_st_writer *lsq_st_writer_create(void);
lsq_status lsq_st_writer_add(lsq_st_writer *w, const char *name, lsq_st_dtype dtype, int ndim,
                             const int64_t *shape, const void *data, lsq_error *err);
lsq_status lsq_st_writer_set_metadata(lsq_st_writer *w, const char *key, const char *value, lsq_error *err);
lsq_status lsq_st_writer_save(lsq_st_writer *w, const char *path, lsq_error *err);
void lsq_st_writer_free(lsq_st_writer *w);

#endif
