/* v2.c - Open Inference Protocol v2 (KServe / Triton) inference requests, run on a worker thread.
 *
 * Input: exactly one tensor, either FP32 [N,3,S,S] (or [3,S,S]) already normalised, or BYTES [N]
 * encoded images (base64 strings in JSON, or the binary tensor extension's 4-byte little-endian
 * length + bytes per element). Outputs: "logits" and "probabilities" FP32 [N,classes]; with
 * parameters.classification = K an output becomes BYTES [N,K] of "score:index:label" (Triton's
 * classification extension). The binary tensor extension (Inference-Header-Content-Length) is
 * accepted for inputs and used for outputs that ask for binary_data (or binary_data_output). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "worker.h"

#define V2_MAX_BATCH 64

/* ==== input helpers ============================================================================ */

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Standard or URL-safe base64, padding optional. Returns the decoded length or -1. */
static long b64_decode(const char *s, size_t n, uint8_t *out)
{
    while (n && s[n - 1] == '=') n--;
    if (n % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}

/* Flatten a (possibly nested) JSON array of numbers into out[cap]; returns the count, or -1 on a
 * non-number, -2 when there are more than cap. */
static long flatten_numbers(json_t *a, float *out, long cap, long at, int depth)
{
    if (depth > 8) return -1;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_array(v)) {
            at = flatten_numbers(v, out, cap, at, depth + 1);
            if (at < 0) return at;
        } else if (json_is_number(v)) {
            if (at >= cap) return -2;
            out[at++] = (float)json_number_value(v);
        } else {
            return -1;
        }
    }
    return at;
}

/* Collect the strings of a (possibly nested) JSON array; returns the count or -1. */
static int flatten_strings(json_t *a, json_t **out, int cap, int at, int depth)
{
    if (depth > 8) return -1;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_array(v)) {
            if ((at = flatten_strings(v, out, cap, at, depth + 1)) < 0) return -1;
        } else if (json_is_string(v) && at < cap) {
            out[at++] = v;
        } else {
            return -1;
        }
    }
    return at;
}

static int shape_get(json_t *shape, long long *dims, int max)
{
    if (!json_is_array(shape) || (int)json_array_size(shape) > max) return -1;
    size_t i;
    json_t *v;
    json_array_foreach(shape, i, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
        dims[i] = json_integer_value(v);
    }
    return (int)json_array_size(shape);
}

/* ==== outputs ================================================================================== */

typedef struct {
    const char *name;
    int probabilities; /* 0: logits */
    int classification; /* K > 0: BYTES [N,K] */
    int binary;
} out_spec;

/* Append a tensor's bytes to the binary tail. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} bytes;

static int bytes_put(bytes *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->len + n) c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) return -1;
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

static int render_output(const model_entry *e, const out_spec *o, const float *logits, int N, json_t *outputs,
                         bytes *bin)
{
    int C = e->classes;
    float *vals = malloc((size_t)N * C * sizeof(float)), *prob = malloc((size_t)C * sizeof(float));
    if (!vals || !prob) goto oom;
    for (int n = 0; n < N; n++) {
        if (o->probabilities) softmax(logits + (size_t)n * C, vals + (size_t)n * C, C);
        else memcpy(vals + (size_t)n * C, logits + (size_t)n * C, (size_t)C * sizeof(float));
    }
    json_t *t = json_pack("{s:s}", "name", o->name);
    json_object_set_new(t, "datatype", json_string(o->classification ? "BYTES" : "FP32"));
    int K = o->classification < C ? o->classification : C;
    json_object_set_new(t, "shape", json_pack("[i,i]", N, o->classification ? K : C));
    size_t start = bin->len;
    json_t *data = o->binary ? NULL : json_array();
    for (int n = 0; n < N; n++) {
        float *v = vals + (size_t)n * C;
        if (!o->classification) {
            if (o->binary) {
                if (bytes_put(bin, v, (size_t)C * sizeof(float))) goto oom_t;
            } else {
                for (int c = 0; c < C; c++) json_array_append_new(data, json_real(v[c]));
            }
            continue;
        }
        memcpy(prob, v, (size_t)C * sizeof(float));
        for (int q = 0; q < K; q++) {
            int best = -1;
            for (int c = 0; c < C; c++)
                if (prob[c] != -INFINITY && (best < 0 || prob[c] > prob[best])) best = c;
            char s[512];
            int len = snprintf(s, sizeof s, "%f:%d:%s", prob[best], best, lsq_model_label(e->model, best));
            if (len >= (int)sizeof s) len = (int)sizeof s - 1;
            prob[best] = -INFINITY;
            if (o->binary) {
                uint32_t l32 = (uint32_t)len;
                if (bytes_put(bin, &l32, 4) || bytes_put(bin, s, (size_t)len)) goto oom_t;
            } else {
                json_array_append_new(data, json_stringn(s, (size_t)len));
            }
        }
    }
    if (o->binary) json_object_set_new(t, "parameters", json_pack("{s:I}", "binary_data_size", (json_int_t)(bin->len - start)));
    else json_object_set_new(t, "data", data);
    json_array_append_new(outputs, t);
    free(vals);
    free(prob);
    return 0;
oom_t:
    json_decref(data);
    json_decref(t);
oom:
    free(vals);
    free(prob);
    return -1;
}

/* ==== the request ============================================================================== */

void v2_run(worker *w, job *j)
{
    const model_entry *e = j->entry;
    const int S = e->input_size, C = e->classes;
    json_error_t je;
    json_t *req = json_loadb((const char *)j->body, j->json_len, JSON_REJECT_DUPLICATES, &je);
    float *logits = NULL, *x = NULL;
    uint8_t *img = NULL;
    json_t *resp = NULL;
    bytes bin = {0};
    if (!req || !json_is_object(req)) {
        job_fail(j, 400, "the inference request is not a JSON object: %s", req ? "wrong type" : je.text);
        goto done;
    }
    const uint8_t *tail = j->body + j->json_len;
    size_t tail_len = j->body_len - j->json_len, tail_at = 0;
    json_t *inputs = json_object_get(req, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1) {
        job_fail(j, 400, "\"inputs\" must be an array of exactly one tensor");
        goto done;
    }
    json_t *in = json_array_get(inputs, 0), *params = json_object_get(in, "parameters");
    const char *iname = json_string_value(json_object_get(in, "name"));
    const char *dtype = json_string_value(json_object_get(in, "datatype"));
    long long dims[8];
    int nd = shape_get(json_object_get(in, "shape"), dims, 8);
    json_t *bsz = json_object_get(params, "binary_data_size");
    if (!iname || !dtype || nd < 1) {
        job_fail(j, 400, "the input needs \"name\", \"datatype\" and a \"shape\" of non-negative integers");
        goto done;
    }
    const uint8_t *blob = NULL;
    size_t blob_len = 0;
    if (bsz) {
        if (!json_is_integer(bsz) || json_integer_value(bsz) < 0 ||
            (unsigned long long)json_integer_value(bsz) > tail_len - tail_at) {
            job_fail(j, 400, "input \"%s\": binary_data_size exceeds the binary data sent", iname);
            goto done;
        }
        blob = tail + tail_at;
        blob_len = (size_t)json_integer_value(bsz);
        tail_at += blob_len;
    } else if (!json_is_array(json_object_get(in, "data"))) {
        job_fail(j, 400, "input \"%s\": needs \"data\" or parameters.binary_data_size", iname);
        goto done;
    }
    int N;
    if (!strcmp(dtype, "FP32")) {
        if (!((nd == 4 && dims[1] == 3 && dims[2] == S && dims[3] == S) || (nd == 3 && dims[0] == 3 && dims[1] == S && dims[2] == S))) {
            job_fail(j, 400, "input \"%s\": FP32 shape must be [N,3,%d,%d] for this model", iname, S, S);
            goto done;
        }
        N = nd == 4 ? (int)(dims[0] > V2_MAX_BATCH ? V2_MAX_BATCH + 1 : dims[0]) : 1;
        if (N < 1 || N > V2_MAX_BATCH) {
            job_fail(j, 400, "input \"%s\": batch must be 1..%d", iname, V2_MAX_BATCH);
            goto done;
        }
        long per = 3L * S * S, count = per * N;
        if (!(x = malloc((size_t)count * sizeof(float))) || !(logits = malloc((size_t)N * C * sizeof(float)))) {
            job_fail(j, 500, "out of memory");
            goto done;
        }
        if (blob) {
            if (blob_len != (size_t)count * sizeof(float)) {
                job_fail(j, 400, "input \"%s\": binary_data_size %zu, but the shape needs %ld bytes", iname, blob_len,
                         count * 4);
                goto done;
            }
            memcpy(x, blob, blob_len); /* little-endian float32, as x86 holds it */
        } else {
            long got = flatten_numbers(json_object_get(in, "data"), x, count, 0, 0);
            if (got != count) {
                job_fail(j, 400, "input \"%s\": data must hold %ld numbers for its shape%s", iname, count,
                         got == -1 ? " (found a non-number)" : "");
                goto done;
            }
        }
        for (int n = 0; n < N; n++) worker_run_tensor(w, e, x + (size_t)n * per, logits + (size_t)n * C, j);
    } else if (!strcmp(dtype, "BYTES")) {
        if (!((nd == 1) || (nd == 2 && dims[1] == 1)) || dims[0] < 1 || dims[0] > V2_MAX_BATCH) {
            job_fail(j, 400, "input \"%s\": BYTES shape must be [N] or [N,1] with N in 1..%d", iname, V2_MAX_BATCH);
            goto done;
        }
        N = (int)dims[0];
        json_t *strs[V2_MAX_BATCH];
        if (!blob && flatten_strings(json_object_get(in, "data"), strs, V2_MAX_BATCH, 0, 0) != N) {
            job_fail(j, 400, "input \"%s\": data must hold %d base64 strings", iname, N);
            goto done;
        }
        if (!(logits = malloc((size_t)N * C * sizeof(float)))) {
            job_fail(j, 500, "out of memory");
            goto done;
        }
        size_t at = 0;
        for (int n = 0; n < N; n++) {
            const uint8_t *p;
            size_t len;
            if (blob) {
                uint32_t l32;
                if (blob_len - at < 4 || (memcpy(&l32, blob + at, 4), blob_len - at - 4 < l32)) {
                    job_fail(j, 400, "input \"%s\": element %d overruns the binary data", iname, n);
                    goto done;
                }
                p = blob + at + 4;
                len = l32;
                at += 4 + (size_t)l32;
            } else {
                size_t sl = json_string_length(strs[n]);
                free(img);
                if (!(img = malloc(sl / 4 * 3 + 3))) {
                    job_fail(j, 500, "out of memory");
                    goto done;
                }
                long dl = b64_decode(json_string_value(strs[n]), sl, img);
                if (dl < 0) {
                    job_fail(j, 400, "input \"%s\": element %d is not base64", iname, n);
                    goto done;
                }
                p = img;
                len = (size_t)dl;
            }
            char err[600];
            if (worker_classify_image(w, e, p, len, logits + (size_t)n * C, j, err, sizeof err)) {
                job_fail(j, 400, "input \"%s\": element %d: %s", iname, n, err);
                goto done;
            }
        }
    } else {
        job_fail(j, 400, "input \"%s\": datatype must be FP32 or BYTES, not %s", iname, dtype);
        goto done;
    }

    /* outputs */
    json_t *rp = json_object_get(req, "parameters");
    int bin_default = json_is_true(json_object_get(rp, "binary_data_output"));
    json_t *outs = json_object_get(req, "outputs");
    out_spec specs[8];
    int ns = 0;
    if (outs && (!json_is_array(outs) || json_array_size(outs) > 8)) {
        job_fail(j, 400, "\"outputs\" must be an array of at most 8");
        goto done;
    }
    if (!outs || !json_array_size(outs)) {
        specs[ns++] = (out_spec){"logits", 0, 0, bin_default};
    } else {
        size_t i;
        json_t *o;
        json_array_foreach(outs, i, o)
        {
            const char *name = json_string_value(json_object_get(o, "name"));
            json_t *op = json_object_get(o, "parameters"), *cls = json_object_get(op, "classification"),
                   *bd = json_object_get(op, "binary_data");
            if (!name || (strcmp(name, "logits") && strcmp(name, "probabilities"))) {
                job_fail(j, 400, "unknown output \"%s\" (this model has \"logits\" and \"probabilities\")",
                         name ? name : "");
                goto done;
            }
            if (cls && (!json_is_integer(cls) || json_integer_value(cls) < 1)) {
                job_fail(j, 400, "output \"%s\": classification must be a positive integer", name);
                goto done;
            }
            specs[ns++] = (out_spec){name, !strcmp(name, "probabilities"),
                                     cls ? (int)(json_integer_value(cls) > C ? C : json_integer_value(cls)) : 0,
                                     bd ? json_is_true(bd) : bin_default};
        }
    }
    resp = json_pack("{s:s,s:s}", "model_name", e->mm->name, "model_version", e->mc->config);
    json_t *id = json_object_get(req, "id");
    if (json_is_string(id)) json_object_set(resp, "id", id);
    json_t *outputs = json_array();
    json_object_set_new(resp, "outputs", outputs);
    for (int i = 0; i < ns; i++)
        if (render_output(e, &specs[i], logits, N, outputs, &bin)) {
            job_fail(j, 500, "out of memory");
            goto done;
        }
    char *text = json_dumps(resp, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!text) {
        job_fail(j, 500, "out of memory");
        goto done;
    }
    size_t tl = strlen(text);
    if (bin.len) {
        char *all = realloc(text, tl + bin.len);
        if (!all) {
            free(text);
            job_fail(j, 500, "out of memory");
            goto done;
        }
        memcpy(all + tl, bin.p, bin.len);
        text = all;
        j->resp_json_len = tl;
        j->content_type = "application/octet-stream";
    } else {
        j->content_type = "application/json";
    }
    j->resp = text;
    j->resp_len = tl + bin.len;
    j->status = 200;
done:
    json_decref(req);
    json_decref(resp);
    free(bin.p);
    free(logits);
    free(x);
    free(img);
}
