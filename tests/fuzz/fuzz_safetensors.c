/* fuzz_safetensors.c - libFuzzer target for the safetensors reader (see tests/fuzz/README.md).
 *
 * The reader takes a path, so each input goes into a memfd opened through /proc/self/fd: no disk
 * traffic. Whatever opens must be consistent: every tensor is found by name and its bytes are
 * readable, and lsq_st_read_f32 on float tensors must not crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) abort();

    lsq_error err;
    lsq_st_file *f = NULL;
    if (lsq_st_open(path, &f, &err) != LSQ_OK) {
        if (f || !strstr(err.msg, path)) abort();
        return 0;
    }
    volatile uint8_t sum = 0;
    for (int i = 0; i < lsq_st_count(f); i++) {
        const lsq_st_tensor *t = lsq_st_get(f, i);
        if (lsq_st_find(f, t->name) != t) abort();
        for (size_t b = 0; b < t->nbytes; b++) sum = (uint8_t)(sum + t->data[b]);
        if (t->numel <= 1 << 16) {
            float *dst = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *dst);
            (void)lsq_st_read_f32(f, t->name, t->ndim, t->shape, dst, &err);
            free(dst);
        }
    }
    for (int i = 0; i < lsq_st_metadata_count(f); i++)
        if (!lsq_st_metadata(f, lsq_st_metadata_key(f, i))) abort();
    lsq_st_close(f);
    return 0;
}
