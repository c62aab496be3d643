/* lsq.h - public API of the lsq inference engine.
 *
 * The engine loads EfficientNet / MixNet checkpoints (safetensors, timm tensor names), plans the
 * memory of a network for one input size, and runs it. It knows nothing about HTTP.
 *
 * Object model:
 *   lsq_model    immutable after load: architecture, folded weights, labels, preprocessing.
 *                One model can be shared by any number of sessions and threads.
 *   lsq_session  a model planned for one input size: activation memory and a thread pool.
 *                One session runs one inference at a time; give each worker thread its own.
 *   lsq_image    a decoded 8-bit RGB image (JPEG, PNG or WebP).
 *
 * Ownership: the caller owns every buffer it passes in (inputs, outputs). Objects returned through
 * an out-pointer are owned by the caller and released with the matching _free function.
 * Errors: every fallible call returns an lsq_status and, when err is not NULL, fills err->msg with
 * a sentence naming the file, tensor or field at fault.
 */
#ifndef LSQ_H
#define LSQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Only the functions declared here are exported from liblsq.so (the rest builds hidden). */
#define LSQ_API __attribute__((visibility("default")))

#define LSQ_VERSION "0.1.0"
#define LSQ_FORMAT_VERSION 1 /* our checkpoints' __metadata__["format_version"] */

typedef enum {
    LSQ_OK = 0,
    LSQ_ERR_ARG,         /* invalid argument from the caller */
    LSQ_ERR_IO,          /* file could not be opened, read or mapped */
    LSQ_ERR_FORMAT,      /* malformed container: safetensors header, JSON, IDX, ... */
    LSQ_ERR_TENSOR,      /* a tensor is missing, misshapen, mistyped or out of bounds */
    LSQ_ERR_ARCH,        /* unknown or unspecified architecture */
    LSQ_ERR_IMAGE,       /* undecodable, corrupt or unsupported image */
    LSQ_ERR_LIMIT,       /* input exceeds a configured limit (pixels, bytes, size) */
    LSQ_ERR_NOMEM,       /* allocation failed */
    LSQ_ERR_UNSUPPORTED, /* valid request the engine cannot serve (e.g. unknown config) */
} lsq_status;

LSQ_API const char *lsq_status_to_string(lsq_status s);

typedef struct {
    char msg[512];
} lsq_error;

/* ---------------------------------------------------------------------------------------------
 * Models
 * ------------------------------------------------------------------------------------------- */

typedef struct lsq_model lsq_model;
typedef struct lsq_session lsq_session;

typedef enum {
    LSQ_INTERP_BILINEAR = 0,
    LSQ_INTERP_BICUBIC,
    LSQ_INTERP_NEAREST,
} lsq_interp;

/* Evaluation preprocessing, timm style: resize the shorter side to floor(size / crop_pct) (or to
 * resize_size when it is > 0), center-crop size x size, scale to [0,1], (x - mean) / std. */
typedef struct {
    int input_size;   /* square model input, pixels */
    int resize_size;  /* shorter side after resize; 0 = floor(input_size / crop_pct) */
    float crop_pct;   /* e.g. 0.875 */
    lsq_interp interp;
    float mean[3];
    float std[3];
    int grayscale;    /* 1: convert to luma (PIL 'L') then replicate to 3 channels */
} lsq_preprocess;

typedef struct {
    const char *arch;   /* overrides / supplies the architecture when the file lacks metadata */
    const char *config; /* execution configuration; NULL or "fp32" for float */
} lsq_load_options;

LSQ_API lsq_status lsq_model_load(const char *path, const lsq_load_options *opt, lsq_model **out, lsq_error *err);
LSQ_API void lsq_model_free(lsq_model *m);

LSQ_API const char *lsq_model_arch(const lsq_model *m);
LSQ_API const char *lsq_model_config(const lsq_model *m); /* the canonical configuration name */
LSQ_API int lsq_model_num_classes(const lsq_model *m);
LSQ_API const char *lsq_model_label(const lsq_model *m, int index); /* never NULL: falls back to "class_<i>" */
LSQ_API const lsq_preprocess *lsq_model_preprocess(const lsq_model *m);
LSQ_API int64_t lsq_model_num_params(const lsq_model *m);
LSQ_API int64_t lsq_model_file_bytes(const lsq_model *m);
/* Human-readable summary (architecture, layers, tensors, metadata) written to buf; returns the
 * length it needed (snprintf semantics). */
LSQ_API size_t lsq_model_describe(const lsq_model *m, char *buf, size_t len);

/* Architectures the engine can build, as a NULL-terminated list. */
LSQ_API const char *const *lsq_arch_names(void);

/* Write a checkpoint with seeded random weights and randomised BatchNorm statistics (for
 * benchmarks and tests). num_classes <= 0 means 1000. */
LSQ_API lsq_status lsq_model_init_random(const char *arch, int num_classes, uint64_t seed, const char *out_path,
                                 lsq_error *err);

/* ---------------------------------------------------------------------------------------------
 * Quantization: LSQ+ initialisation of an FP32 checkpoint (`lsq quantize`)
 *
 * Weight scales per output channel by the mean +- 3 sigma rule (LSQ: 2 mean|w| / sqrt(p));
 * activation scale and offset by MSE search (or min-max; LSQ: 2 mean|x| / sqrt(p), offset 0) over
 * the inputs each quantizer sees in a forward pass with float activations and the weights already
 * quantized - the algorithm of models/lsqnet/quant.py calibrate(), each input treated as one batch. The result is the packed
 * deployable checkpoint (codes at their bit-width, BatchNorm folded). Deterministic: the same file,
 * options and inputs give a byte-identical output.
 * ------------------------------------------------------------------------------------------- */

typedef struct lsq_calib lsq_calib;

typedef struct {
    const char *config;   /* "wXaY", "wXaY-lsq", with + suffixes (README "Configurations"); required, fp32 refused */
    const char *act_init; /* "mse", "minmax" or "lsq"; NULL: the configuration's (mse; lsq for -lsq).
                             The network input's signed quantizer uses mse unless this is minmax. */
    const char *arch;     /* as lsq_load_options.arch */
    int size;             /* calibration input size (square); <= 0: the model's preprocess input_size */
    int num_inputs;       /* how many inputs lsq_calib_add will get, >= 1: the subsample is drawn in one
                             pass in bounded memory, so the count is needed up front */
} lsq_calib_options;

/* Load the FP32 checkpoint (timm names, float weights and BatchNorm), set the weight scales and plan
 * the observation pass (it writes and removes one temporary file under $TMPDIR or /tmp). */
LSQ_API lsq_status lsq_calib_create(const char *fp32_path, const lsq_calib_options *opt, lsq_calib **out,
                                    lsq_error *err);
/* The preprocessing calibration images need (the model's, at the calibration size); owned by c. */
LSQ_API const lsq_preprocess *lsq_calib_preprocess(const lsq_calib *c);
/* Observe one input: float32 NCHW [1, 3, size, size], normalised. LSQ_ERR_ARG past num_inputs. */
LSQ_API lsq_status lsq_calib_add(lsq_calib *c, const float *input, lsq_error *err);
/* Initialise every quantizer (after exactly num_inputs inputs) and write the packed checkpoint
 * atomically. */
LSQ_API lsq_status lsq_calib_write(lsq_calib *c, const char *out_path, lsq_error *err);
LSQ_API void lsq_calib_free(lsq_calib *c);

/* All of the above in one call: inputs holds opt->num_inputs images of [3, size, size] floats. */
LSQ_API lsq_status lsq_model_quantize(const char *fp32_path, const lsq_calib_options *opt, const float *inputs,
                                      const char *out_path, lsq_error *err);

/* ---------------------------------------------------------------------------------------------
 * Sessions
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    int height, width; /* input size, >= 32 */
    int threads;       /* intra-op threads; <= 0 means 1 */
    int reference;     /* quantized models: run the float reference path (fake quantization, one
                          thread) instead of the integer path; for tests and debugging */
} lsq_session_options;

LSQ_API lsq_status lsq_session_create(const lsq_model *m, const lsq_session_options *opt, lsq_session **out,
                              lsq_error *err);
LSQ_API void lsq_session_free(lsq_session *s);

/* input: float32 NCHW [1, 3, H, W] (already normalised); logits: float32 [num_classes].
 * Never allocates. */
LSQ_API lsq_status lsq_session_run(lsq_session *s, const float *input, float *logits);

/* How the session executes: "fp32 (avx512)", "integer (q8 avx512vnni)", "reference (fake quantization)". */
LSQ_API const char *lsq_session_describe(const lsq_session *s);

/* Quantized models: fn is called during each run with every quantized activation tensor, in
 * network order: the layer that reads it (e.g. "blocks.1.0.conv_pw"), its n codes (NHWC order;
 * signed for the network input) and, on the reference path, the values before rounding
 * ((x - offset) / scale; NULL on the integer path). For comparing the two paths code by code.
 * Runs with a trace set may allocate. Returns LSQ_ERR_ARG for FP32 sessions. */
typedef void (*lsq_trace_fn)(void *user, const char *layer, const int32_t *codes, const float *u, size_t n);
LSQ_API lsq_status lsq_session_set_trace(lsq_session *s, lsq_trace_fn fn, void *user);

/* ---------------------------------------------------------------------------------------------
 * Images
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    int width, height;
    uint8_t *rgb; /* width * height * 3 bytes, interleaved, row-major */
} lsq_image;

typedef struct {
    int64_t max_pixels;  /* reject larger images before allocating; <= 0 means LSQ_DEFAULT_MAX_PIXELS */
    int apply_exif;      /* honour EXIF orientation in JPEGs (default 1 when options are NULL) */
} lsq_image_options;

#define LSQ_DEFAULT_MAX_PIXELS (64LL * 1024 * 1024)

/* Decode JPEG, PNG or WebP from memory (sniffed from the bytes, not from a name). */
LSQ_API lsq_status lsq_image_decode(const void *data, size_t size, const lsq_image_options *opt, lsq_image *out,
                            lsq_error *err);
LSQ_API lsq_status lsq_image_load(const char *path, const lsq_image_options *opt, lsq_image *out, lsq_error *err);
LSQ_API void lsq_image_free(lsq_image *img);

/* Resize, crop and normalise into out: float32 NCHW [1, 3, p->input_size, p->input_size]. */
LSQ_API lsq_status lsq_image_preprocess(const lsq_image *img, const lsq_preprocess *p, float *out, lsq_error *err);

/* The shorter side after p's resize step: p->resize_size, or floor(input_size / crop_pct) computed
 * as timm does. 0 when p is invalid. */
LSQ_API int lsq_preprocess_resize_size(const lsq_preprocess *p);

/* As lsq_image_decode, but a JPEG whose shorter side is at least twice resize_short (typically
 * lsq_preprocess_resize_size(p)) is decoded at 1/2, 1/4 or 1/8 scale in TurboJPEG's IDCT, the
 * largest reduction that keeps it so: several times faster on photos, but the pixels then differ
 * slightly from PIL's (engine/src/image.c gives the measured difference). Other formats and
 * resize_short <= 0 decode exactly as lsq_image_decode. */
LSQ_API lsq_status lsq_image_decode_scaled(const void *data, size_t size, const lsq_image_options *opt, int resize_short,
                                   lsq_image *out, lsq_error *err);

/* ---------------------------------------------------------------------------------------------
 * Datasets: labelled images for evaluation and calibration
 * ------------------------------------------------------------------------------------------- */

typedef struct lsq_dataset lsq_dataset;

/* path: a directory holding IDX files (<prefix>-images-idx3-ubyte[.gz] and -labels-idx1-ubyte[.gz];
 * split "test" (t10k, the default) or "train"), or images plus a labels.txt of "<file> <class>"
 * lines, or one sub-directory of images per class (sorted by name = class index). */
LSQ_API lsq_status lsq_dataset_open(const char *path, const char *split, lsq_dataset **out, lsq_error *err);
LSQ_API void lsq_dataset_free(lsq_dataset *d);
LSQ_API int lsq_dataset_size(const lsq_dataset *d);
LSQ_API int lsq_dataset_num_classes(const lsq_dataset *d);
LSQ_API int lsq_dataset_label(const lsq_dataset *d, int i);
LSQ_API const char *lsq_dataset_class_name(const lsq_dataset *d, int c); /* folder name, or NULL */
LSQ_API const char *lsq_dataset_describe(const lsq_dataset *d);
/* Decode item i (grey IDX images come as RGB with R = G = B); free with lsq_image_free. */
LSQ_API lsq_status lsq_dataset_get(const lsq_dataset *d, int i, lsq_image *img, lsq_error *err);

/* ---------------------------------------------------------------------------------------------
 * Evaluation: accuracy and inference latency of a model on a labelled set (eval.c)
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    int limit;   /* evaluate the first `limit` items; <= 0: all of them */
    int threads; /* intra-op threads of the evaluation session; <= 0 means 1 */
    /* Optional, called after every item; a non-zero return stops the evaluation (LSQ_ERR_ARG,
     * "cancelled"). */
    int (*progress)(void *user, int done, int total, int top1);
    void *user;
    /* Optional caller-owned arrays of lsq_model_num_classes() ints, zeroed by the caller: images
     * and top-1 hits per model class. */
    int *class_total, *class_correct;
} lsq_eval_options;

typedef struct {
    int images, top1, top5;        /* counts */
    double p50_ms, p90_ms, p99_ms; /* batch-1 lsq_session_run latency, nearest rank */
    double infer_total_ms;         /* sum of the inference times */
} lsq_eval_result;

/* Every item goes through the model's preprocessing and one batch-1 inference. Dataset classes map
 * to model classes by name when all the dataset's folder names are among the model's labels, else
 * by index. Ties rank the lower class index first. */
LSQ_API lsq_status lsq_eval(const lsq_model *m, const lsq_dataset *ds, const lsq_eval_options *opt,
                            lsq_eval_result *out, lsq_error *err);

/* ---------------------------------------------------------------------------------------------
 * Runtime
 * ------------------------------------------------------------------------------------------- */

/* One line naming the kernels in use (e.g. "kernels: avx512 (forced: no)") and the BLAS core. */
LSQ_API const char *lsq_runtime_describe(void);

/* Debian's OpenBLAS misdetects recent CPUs and picks slow kernels. Call first thing in main():
 * when OPENBLAS_CORETYPE is unset and the library's core is weaker than the CPU supports, this
 * re-executes the program with OPENBLAS_CORETYPE set (the library reads it only when it loads).
 * A value already set is respected. Returns only when no re-exec happened. */
LSQ_API void lsq_blas_fixup(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif /* LSQ_H */
