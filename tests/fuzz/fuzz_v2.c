/* fuzz_v2.c - libFuzzer target for the server's Open Inference Protocol request parser (v2_run):
 * JSON header, tensor shapes, nested data, base64 and the binary tensor extension's lengths.
 * The first two input bytes give the JSON header's length (binary extension); the rest is the body.
 * The model is a random efficientnet_b0 (10 classes) planned at 32x32, so the rare input that
 * parses runs a real inference. Build: see tests/fuzz/README.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/job.h"
#include "../../server/worker.h"

static worker w;
static model_entry entry;
static manifest_model mm = {.name = "fuzz", .default_config = "fp32"};
static manifest_config mc = {.config = "fp32"};
static server_options opt = {.max_pixels = 1 << 20};

static void setup(void)
{
    const char *path = "/tmp/lsq-fuzz-v2.safetensors";
    lsq_error err;
    lsq_model *m;
    if (lsq_model_init_random("efficientnet_b0", 10, 0, path, &err) || lsq_model_load(path, NULL, &m, &err)) {
        fprintf(stderr, "fuzz_v2: %s\n", err.msg);
        abort();
    }
    entry = (model_entry){.id = 0, .mm = &mm, .mc = &mc, .model = m, .input_size = 32, .classes = 10};
    static lsq_session *sessions[1];
    lsq_session_options so = {.height = 32, .width = 32, .threads = 1};
    if (lsq_session_create(m, &so, &sessions[0], &err)) abort();
    w = (worker){.opt = &opt, .sessions = sessions, .x = calloc(3 * 32 * 32, sizeof(float)),
                 .logits = calloc(10, sizeof(float))};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!w.sessions) setup();
    if (size < 2) return 0;
    size_t hl = (size_t)data[0] | (size_t)data[1] << 8;
    const uint8_t *body = data + 2;
    size_t len = size - 2;
    uint8_t *copy = malloc(len ? len : 1); /* exact size, so ASan sees any over-read */
    memcpy(copy, body, len);
    job j = {.kind = JOB_V2_INFER, .entry = &entry, .body = copy, .body_len = len,
             .json_len = hl && hl <= len ? hl : len};
    v2_run(&w, &j);
    if (j.status != 200 && j.status != 400 && j.status != 500) abort();
    free(j.resp);
    free(copy);
    return 0;
}
