/* endpoints.c - the JSON documents the server answers with (models, v2 metadata, classify). */
#include "endpoints.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>

#include "version.h"

static char *dump(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(o);
    return s;
}

char *endpoint_error(const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dump(json_pack("{s:s}", "error", msg));
}

char *endpoint_models(const model_registry *reg)
{
    json_t *a = json_array();
    for (int i = 0; i < reg->n; i++) {
        const model_entry *e = &reg->entries[i];
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:s,s:b,s:s,s:{s:i,s:i},s:i,s:i,s:I,s:s}", "model",
                                           e->mm->name, "config", e->mc->config, "source", registry_source(e), "arch",
                                           lsq_model_arch(e->model), "default", e->is_default, "description",
                                           e->mm->description, "bits", "weights", e->wbits, "activations", e->abits,
                                           "input_size", e->input_size, "classes", e->classes, "model_bytes",
                                           (json_int_t)e->file_bytes, "dataset",
                                           e->mm->dataset_name ? e->mm->dataset_name : ""));
    }
    return dump(a);
}

char *endpoint_v2_server(void)
{
    return dump(json_pack("{s:s,s:s,s:[s,s]}", "name", "lsq-server", "version", LSQ_SERVER_VERSION, "extensions",
                          "classification", "binary_tensor_data"));
}

char *endpoint_v2_model(const model_registry *reg, const model_entry *e)
{
    json_t *versions = json_array();
    for (int i = 0; i < reg->n; i++)
        if (reg->entries[i].mm == e->mm) json_array_append_new(versions, json_string(reg->entries[i].mc->config));
    int S = e->input_size;
    return dump(json_pack("{s:s,s:o,s:s,s:[{s:s,s:s,s:[i,i,i,i]}],s:[{s:s,s:s,s:[i,i]},{s:s,s:s,s:[i,i]}]}", "name",
                          e->mm->name, "versions", versions, "platform", "lsq", "inputs", "name", "input", "datatype",
                          "FP32", "shape", -1, 3, S, S, "outputs", "name", "logits", "datatype", "FP32", "shape", -1,
                          e->classes, "name", "probabilities", "datatype", "FP32", "shape", -1, e->classes));
}

char *endpoint_classify(const job *j, const char *request_id, double total_ms)
{
    json_t *preds = json_array();
    for (int i = 0; i < j->n_preds; i++)
        json_array_append_new(preds, json_pack("{s:s,s:i,s:f}", "label", lsq_model_label(j->entry->model, j->pred_index[i]),
                                               "index", j->pred_index[i], "score", (double)j->pred_score[i]));
    return dump(json_pack("{s:s,s:s,s:s,s:o,s:{s:f,s:f,s:f,s:f,s:f}}", "model", j->entry->mm->name, "config",
                          j->entry->mc->config, "request_id", request_id, "predictions", preds, "timing_ms", "queue",
                          j->queue_ms, "decode", j->decode_ms, "preprocess", j->preprocess_ms, "infer", j->infer_ms,
                          "total", total_ms));
}
