/* test_safetensors.c - safetensors reader/writer: round trips, float conversions, and a battery of
 * hostile files (each malformation, every truncation, random byte corruption) that must fail
 * cleanly with a message naming the file and tensor. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "unit.h"

/* Test hooks exported by safetensors.c (not part of its header). */
float lsq_st_f16_to_f32(uint16_t h);
float lsq_st_bf16_to_f32(uint16_t h);

static char tmpdir[64];

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static int has(const char *msg, const char *sub) { return strstr(msg, sub) != NULL; }

#define CHECK_HAS(msg, sub)                                                                       \
    do {                                                                                          \
        if (!has((msg), (sub))) {                                                                 \
            printf("#   %s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, (msg), (sub));      \
            unit_cur_failed = 1;                                                                  \
        }                                                                                         \
    } while (0)

static void tmp_path(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", tmpdir, name); }

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        perror(path);
        abort();
    }
    if (len && fwrite(data, 1, len, fp) != len) abort();
    fclose(fp);
}

/* 8-byte little-endian length, the header text (declared length hlen), then len data bytes. */
static size_t make_file(uint8_t *buf, uint64_t hlen, const char *header, const void *data, size_t dlen)
{
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hlen >> (8 * i));
    size_t n = strlen(header);
    memcpy(buf + 8, header, n);
    if (dlen) memcpy(buf + 8 + n, data, dlen);
    return 8 + n + dlen;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(n ? (size_t)n : 1);
    if (fread(b, 1, (size_t)n, fp) != (size_t)n) abort();
    fclose(fp);
    *len = (size_t)n;
    return b;
}

/* Every tensor of an opened file lies inside the file and the metadata strings are readable. */
static int consistent(const lsq_st_file *f, const uint8_t *file, size_t len)
{
    (void)file;
    if ((size_t)lsq_st_file_size(f) != len) return 0;
    for (int i = 0; i < lsq_st_count(f); i++) {
        const lsq_st_tensor *t = lsq_st_get(f, i);
        if (!t || lsq_st_find(f, t->name) != t) return 0;
        if (t->nbytes != (size_t)t->numel * lsq_st_dtype_size(t->dtype)) return 0;
        volatile uint8_t sum = 0; /* touch every byte: ASan/valgrind catch a bad pointer */
        for (size_t b = 0; b < t->nbytes; b++) sum = (uint8_t)(sum + t->data[b]);
        (void)sum;
    }
    for (int i = 0; i < lsq_st_metadata_count(f); i++)
        if (!lsq_st_metadata(f, lsq_st_metadata_key(f, i))) return 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Conversions
 * ------------------------------------------------------------------------------------------- */

static void test_dtype_table(void)
{
    CHECK(strcmp(lsq_st_dtype_name(LSQ_ST_BF16), "BF16") == 0);
    CHECK(strcmp(lsq_st_dtype_name(LSQ_ST_BOOL), "BOOL") == 0);
    CHECK(lsq_st_dtype_size(LSQ_ST_F64) == 8 && lsq_st_dtype_size(LSQ_ST_I16) == 2);
    CHECK(lsq_st_dtype_size(LSQ_ST_BOOL) == 1 && lsq_st_dtype_size((lsq_st_dtype)99) == 0);
}

static void test_f16_known_bits(void)
{
    static const struct {
        uint16_t h;
        uint32_t f;
    } cases[] = {
        {0x0000, 0x00000000}, {0x8000, 0x80000000}, /* +-0 */
        {0x0001, 0x33800000},                       /* smallest subnormal 2^-24 */
        {0x0002, 0x34000000}, {0x0155, 0x37aa8000}, /* subnormals */
        {0x03ff, 0x387fc000},                       /* largest subnormal */
        {0x8001, 0xb3800000},                       /* negative subnormal */
        {0x0400, 0x38800000},                       /* smallest normal 2^-14 */
        {0x3c00, 0x3f800000}, {0xc000, 0xc0000000}, {0x3555, 0x3eaaa000},
        {0x7bff, 0x477fe000}, /* 65504 */
        {0x7c00, 0x7f800000}, {0xfc00, 0xff800000}, /* +-inf */
        {0x7e00, 0x7fc00000}, {0x7c01, 0x7f802000}, {0xfe01, 0xffc02000}, /* NaNs keep payload */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t got = bits_of(lsq_st_f16_to_f32(cases[i].h));
        if (got != cases[i].f) {
            printf("#   f16 0x%04x -> 0x%08x, want 0x%08x\n", cases[i].h, got, cases[i].f);
            unit_cur_failed = 1;
        }
    }
}

static void test_f16_exhaustive(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double want = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        if (h & 0x8000) want = -want;
        float got = lsq_st_f16_to_f32((uint16_t)h);
        int ok = isnan(want) ? isnan(got) && (signbit(got) != 0) == ((h & 0x8000) != 0)
                             : (double)got == want && (signbit(got) != 0) == ((h & 0x8000) != 0);
        if (!ok && bad++ < 5) printf("#   f16 0x%04x -> %g, want %g\n", h, (double)got, want);
    }
    CHECK(bad == 0);
}

static void test_bf16_known_bits(void)
{
    CHECK(bits_of(lsq_st_bf16_to_f32(0x3f80)) == 0x3f800000);
    CHECK(bits_of(lsq_st_bf16_to_f32(0xc049)) == 0xc0490000);
    CHECK(bits_of(lsq_st_bf16_to_f32(0x0001)) == 0x00010000); /* subnormal */
    CHECK(bits_of(lsq_st_bf16_to_f32(0x8000)) == 0x80000000);
    CHECK(bits_of(lsq_st_bf16_to_f32(0x7f80)) == 0x7f800000 && isinf(lsq_st_bf16_to_f32(0x7f80)));
    CHECK(bits_of(lsq_st_bf16_to_f32(0xff80)) == 0xff800000);
    CHECK(isnan(lsq_st_bf16_to_f32(0x7fc0)));
    CHECK(lsq_st_bf16_to_f32(0x7f7f) == 0x1.fep127f); /* largest finite */
}

/* ---------------------------------------------------------------------------------------------
 * Writer -> reader
 * ------------------------------------------------------------------------------------------- */

static void test_round_trip(void)
{
    char path[128], path2[128], tmpf[160];
    tmp_path(path, sizeof path, "rt.safetensors");
    tmp_path(path2, sizeof path2, "rt2.safetensors");
    lsq_error err = {{0}};

    float f32[2 * 3] = {1, -2, 3.5f, 0, -0.0f, 1e-40f};
    uint16_t f16[4] = {0x3c00, 0xc000, 0x0001, 0x7bff}; /* 1, -2, 2^-24, 65504 */
    uint16_t bf16[3] = {0x3f80, 0xc049, 0x0000};
    double f64[2] = {0.1, -1e30};
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[2] = {0, 255};
    int16_t i16[2] = {-32768, 7};
    int32_t i32[2] = {INT32_MIN, 42};
    int64_t i64[1] = {INT64_MAX};
    uint8_t bools[3] = {1, 0, 1};
    float scalar = 7.25f;

    lsq_st_writer *w = lsq_st_writer_create();
    CHECK(w != NULL);
    /* metadata set after tensors must still come first in the header; "a" is replaced in place */
    CHECK(lsq_st_writer_add(w, "w.f32", LSQ_ST_F32, 2, (int64_t[]){2, 3}, f32, &err) == LSQ_OK);
    CHECK(lsq_st_writer_set_metadata(w, "format", "pt", &err) == LSQ_OK);
    CHECK(lsq_st_writer_set_metadata(w, "a", "old", &err) == LSQ_OK);
    CHECK(lsq_st_writer_set_metadata(w, "a", "new \"quoted\" \xc3\xa9", &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "w.f16", LSQ_ST_F16, 1, (int64_t[]){4}, f16, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "w.bf16", LSQ_ST_BF16, 1, (int64_t[]){3}, bf16, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "w.f64", LSQ_ST_F64, 2, (int64_t[]){1, 2}, f64, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "i8", LSQ_ST_I8, 1, (int64_t[]){3}, i8, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "u8", LSQ_ST_U8, 1, (int64_t[]){2}, u8, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "i16", LSQ_ST_I16, 1, (int64_t[]){2}, i16, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "i32", LSQ_ST_I32, 1, (int64_t[]){2}, i32, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "i64", LSQ_ST_I64, 1, (int64_t[]){1}, i64, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "bool", LSQ_ST_BOOL, 1, (int64_t[]){3}, bools, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "scalar", LSQ_ST_F32, 0, NULL, &scalar, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "empty", LSQ_ST_F32, 3, (int64_t[]){4, 0, 2}, NULL, &err) == LSQ_OK);
    f32[0] = 99; /* the writer copied the data */
    CHECK(lsq_st_writer_save(w, path, &err) == LSQ_OK);
    CHECK(lsq_st_writer_save(w, path2, &err) == LSQ_OK);
    lsq_st_writer_free(w);
    f32[0] = 1;
    snprintf(tmpf, sizeof tmpf, "%s.tmp", path);
    CHECK(access(tmpf, F_OK) != 0);

    size_t n1, n2;
    uint8_t *b1 = slurp(path, &n1), *b2 = slurp(path2, &n2);
    CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0); /* deterministic */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b1[i];
    CHECK(hlen % 8 == 0 && hlen + 8 <= n1);
    CHECK(memcmp(b1 + 8, "{\"__metadata__\":{\"format\":\"pt\",\"a\":", 35) == 0);
    CHECK(b1[8 + hlen - 1] == ' ' || b1[8 + hlen - 1] == '}');
    free(b1);
    free(b2);

    lsq_st_file *f = NULL;
    CHECK(lsq_st_open(path, &f, &err) == LSQ_OK);
    if (!f) {
        printf("#   %s\n", err.msg);
        return;
    }
    CHECK(strcmp(lsq_st_path(f), path) == 0);
    CHECK(lsq_st_file_size(f) == (int64_t)n1);
    CHECK(lsq_st_count(f) == 12);
    CHECK(strcmp(lsq_st_get(f, 0)->name, "w.f32") == 0 && strcmp(lsq_st_get(f, 11)->name, "empty") == 0);
    CHECK(lsq_st_get(f, 12) == NULL && lsq_st_get(f, -1) == NULL);
    CHECK(lsq_st_metadata_count(f) == 2);
    CHECK(strcmp(lsq_st_metadata_key(f, 0), "format") == 0 && strcmp(lsq_st_metadata_key(f, 1), "a") == 0);
    CHECK(lsq_st_metadata_key(f, 2) == NULL);
    CHECK(strcmp(lsq_st_metadata(f, "a"), "new \"quoted\" \xc3\xa9") == 0);
    CHECK(lsq_st_metadata(f, "nope") == NULL);

    const lsq_st_tensor *t = lsq_st_find(f, "i32");
    CHECK(t && t->dtype == LSQ_ST_I32 && t->ndim == 1 && t->shape[0] == 2 && t->nbytes == 8 &&
          memcmp(t->data, i32, 8) == 0);
    t = lsq_st_find(f, "i64");
    CHECK(t && t->dtype == LSQ_ST_I64 && memcmp(t->data, i64, 8) == 0);
    t = lsq_st_find(f, "i8");
    CHECK(t && memcmp(t->data, i8, 3) == 0);
    t = lsq_st_find(f, "u8");
    CHECK(t && memcmp(t->data, u8, 2) == 0);
    t = lsq_st_find(f, "i16");
    CHECK(t && memcmp(t->data, i16, 4) == 0);
    t = lsq_st_find(f, "bool");
    CHECK(t && t->dtype == LSQ_ST_BOOL && memcmp(t->data, bools, 3) == 0);
    t = lsq_st_find(f, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0 && t->ndim == 3 && t->shape[1] == 0);
    t = lsq_st_find(f, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1);

    float out[8];
    CHECK(lsq_st_read_f32(f, "w.f32", 2, (int64_t[]){2, 3}, out, &err) == LSQ_OK);
    CHECK(memcmp(out, f32, sizeof f32) == 0);
    CHECK(lsq_st_read_f32(f, "w.f16", 1, (int64_t[]){4}, out, &err) == LSQ_OK);
    CHECK(out[0] == 1 && out[1] == -2 && out[2] == ldexpf(1, -24) && out[3] == 65504);
    CHECK(lsq_st_read_f32(f, "w.bf16", 1, (int64_t[]){3}, out, &err) == LSQ_OK);
    CHECK(out[0] == 1 && out[1] == -3.140625f && out[2] == 0);
    CHECK(lsq_st_read_f32(f, "w.f64", 2, (int64_t[]){1, 2}, out, &err) == LSQ_OK);
    CHECK(out[0] == 0.1f && out[1] == -1e30f);
    CHECK(lsq_st_read_f32(f, "scalar", 0, NULL, out, &err) == LSQ_OK && out[0] == 7.25f);
    CHECK(lsq_st_read_f32(f, "empty", 3, (int64_t[]){4, 0, 2}, NULL, &err) == LSQ_OK);
    lsq_st_close(f);
}

static void test_empty_writer(void)
{
    char path[128];
    tmp_path(path, sizeof path, "empty.safetensors");
    lsq_error err = {{0}};
    lsq_st_writer *w = lsq_st_writer_create();
    CHECK(lsq_st_writer_save(w, path, &err) == LSQ_OK);
    lsq_st_writer_free(w);
    size_t n;
    uint8_t *b = slurp(path, &n);
    CHECK(b && n == 16 && b[0] == 8 && memcmp(b + 8, "{}      ", 8) == 0);
    free(b);
    lsq_st_file *f = NULL;
    CHECK(lsq_st_open(path, &f, &err) == LSQ_OK);
    CHECK(f && lsq_st_count(f) == 0 && lsq_st_metadata_count(f) == 0 && lsq_st_find(f, "x") == NULL);
    lsq_st_close(f);
}

static void test_writer_errors(void)
{
    lsq_error err = {{0}};
    float x[4] = {0};
    lsq_st_writer *w = lsq_st_writer_create();
    CHECK(lsq_st_writer_add(w, "a", LSQ_ST_F32, 1, (int64_t[]){4}, x, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(w, "a", LSQ_ST_F32, 1, (int64_t[]){4}, x, &err) == LSQ_ERR_ARG);
    CHECK_HAS(err.msg, "'a' added twice");
    CHECK(lsq_st_writer_add(w, "__metadata__", LSQ_ST_F32, 1, (int64_t[]){4}, x, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_writer_add(w, "", LSQ_ST_F32, 1, (int64_t[]){4}, x, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_writer_add(w, "bad\xff", LSQ_ST_F32, 1, (int64_t[]){4}, x, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_writer_add(w, "b", LSQ_ST_F32, 1, (int64_t[]){-1}, x, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_writer_add(w, "b", LSQ_ST_F32, 2, (int64_t[]){INT64_MAX, 4}, x, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_writer_add(w, "b", LSQ_ST_F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, x, &err) ==
          LSQ_ERR_ARG);
    CHECK(lsq_st_writer_add(w, "b", (lsq_st_dtype)42, 1, (int64_t[]){4}, x, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_writer_add(w, "b", LSQ_ST_F32, 1, (int64_t[]){4}, NULL, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_writer_set_metadata(w, "k", NULL, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_writer_set_metadata(w, "k", "\xc3", &err) == LSQ_ERR_ARG);
    char path[160];
    tmp_path(path, sizeof path, "no/such/dir/x.safetensors");
    CHECK(lsq_st_writer_save(w, path, &err) == LSQ_ERR_IO);
    CHECK_HAS(err.msg, "no/such/dir/x.safetensors.tmp");
    lsq_st_writer_free(w);
}

static void test_many_tensors_lookup(void)
{
    char path[128], name[64];
    tmp_path(path, sizeof path, "many.safetensors");
    lsq_error err = {{0}};
    lsq_st_writer *w = lsq_st_writer_create();
    for (int i = 0; i < 700; i++) {
        float v = (float)i;
        snprintf(name, sizeof name, "blocks.%d.%d.conv_pw.weight", i % 7, i);
        CHECK(lsq_st_writer_add(w, name, LSQ_ST_F32, 1, (int64_t[]){1}, &v, &err) == LSQ_OK);
    }
    CHECK(lsq_st_writer_save(w, path, &err) == LSQ_OK);
    lsq_st_writer_free(w);
    lsq_st_file *f = NULL;
    CHECK(lsq_st_open(path, &f, &err) == LSQ_OK);
    if (!f) return;
    CHECK(lsq_st_count(f) == 700);
    for (int i = 0; i < 700; i++) {
        snprintf(name, sizeof name, "blocks.%d.%d.conv_pw.weight", i % 7, i);
        float v = -1;
        const lsq_st_tensor *t = lsq_st_find(f, name);
        CHECK(t == lsq_st_get(f, i));
        CHECK(lsq_st_read_f32(f, name, 1, (int64_t[]){1}, &v, &err) == LSQ_OK && v == (float)i);
    }
    CHECK(lsq_st_find(f, "blocks.0.0.conv_pw") == NULL && lsq_st_find(f, "") == NULL);
    CHECK(lsq_st_find(f, "zzz") == NULL && lsq_st_find(f, NULL) == NULL);
    lsq_st_close(f);
}

/* ---------------------------------------------------------------------------------------------
 * lsq_st_read_f32 checks
 * ------------------------------------------------------------------------------------------- */

static void test_read_f32_errors(void)
{
    char path[128];
    tmp_path(path, sizeof path, "model.safetensors");
    lsq_error err = {{0}};
    static float w[32 * 3 * 5 * 5];
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) w[i] = (float)i;
    float bad[4] = {0, 1, 2, 3};
    uint32_t nan = 0x7fc00000;
    memcpy(&bad[2], &nan, 4);
    uint16_t h[3] = {0x3c00, 0x7c00, 0};
    uint16_t bh[2] = {0x0000, 0xff81};
    double big[2] = {1.0, 1e300};
    int8_t q[2] = {1, 2};

    lsq_st_writer *wr = lsq_st_writer_create();
    CHECK(lsq_st_writer_add(wr, "blocks.0.0.conv_dw.weight", LSQ_ST_F32, 4, (int64_t[]){32, 3, 5, 5}, w, &err) ==
          LSQ_OK);
    CHECK(lsq_st_writer_add(wr, "nan32", LSQ_ST_F32, 1, (int64_t[]){4}, bad, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(wr, "inf16", LSQ_ST_F16, 1, (int64_t[]){3}, h, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(wr, "nanbf16", LSQ_ST_BF16, 1, (int64_t[]){2}, bh, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(wr, "big64", LSQ_ST_F64, 1, (int64_t[]){2}, big, &err) == LSQ_OK);
    CHECK(lsq_st_writer_add(wr, "q", LSQ_ST_I8, 1, (int64_t[]){2}, q, &err) == LSQ_OK);
    CHECK(lsq_st_writer_save(wr, path, &err) == LSQ_OK);
    lsq_st_writer_free(wr);

    lsq_st_file *f = NULL;
    CHECK(lsq_st_open(path, &f, &err) == LSQ_OK);
    if (!f) return;
    static float out[32 * 3 * 5 * 5];
    CHECK(lsq_st_read_f32(f, "blocks.0.0.conv_dw.weight", 4, (int64_t[]){32, 3, 3, 3}, out, &err) == LSQ_ERR_TENSOR);
    CHECK_HAS(err.msg, path);
    CHECK_HAS(err.msg, "'blocks.0.0.conv_dw.weight'");
    CHECK_HAS(err.msg, "expected [32, 3, 3, 3], found [32, 3, 5, 5]");
    CHECK(lsq_st_read_f32(f, "blocks.0.0.conv_dw.weight", 3, (int64_t[]){32, 3, 5}, out, &err) == LSQ_ERR_TENSOR);
    CHECK_HAS(err.msg, "expected [32, 3, 5], found [32, 3, 5, 5]");
    CHECK(lsq_st_read_f32(f, "blocks.0.0.conv_dw.weight", 4, (int64_t[]){32, 3, 5, 5}, out, &err) == LSQ_OK);
    CHECK(memcmp(out, w, sizeof w) == 0);

    CHECK(lsq_st_read_f32(f, "blocks.0.0.bn1.weight", 1, (int64_t[]){32}, out, &err) == LSQ_ERR_TENSOR);
    CHECK_HAS(err.msg, path);
    CHECK_HAS(err.msg, "tensor 'blocks.0.0.bn1.weight' is missing");

    CHECK(lsq_st_read_f32(f, "q", 1, (int64_t[]){2}, out, &err) == LSQ_ERR_TENSOR);
    CHECK_HAS(err.msg, "tensor 'q' has dtype I8, expected a float type");

    CHECK(lsq_st_read_f32(f, "nan32", 1, (int64_t[]){4}, out, &err) == LSQ_ERR_TENSOR);
    CHECK_HAS(err.msg, "'nan32'");
    CHECK_HAS(err.msg, "element 2 is NaN");
    CHECK(lsq_st_read_f32(f, "inf16", 1, (int64_t[]){3}, out, &err) == LSQ_ERR_TENSOR);
    CHECK_HAS(err.msg, "'inf16': element 1 is infinite");
    CHECK(lsq_st_read_f32(f, "nanbf16", 1, (int64_t[]){2}, out, &err) == LSQ_ERR_TENSOR);
    CHECK_HAS(err.msg, "'nanbf16': element 1 is NaN");
    CHECK(lsq_st_read_f32(f, "big64", 1, (int64_t[]){2}, out, &err) == LSQ_ERR_TENSOR);
    CHECK_HAS(err.msg, "'big64': element 1 is outside the float32 range");
    CHECK(lsq_st_read_f32(f, "q", -1, NULL, out, &err) == LSQ_ERR_ARG);
    CHECK(lsq_st_read_f32(f, NULL, 0, NULL, out, &err) == LSQ_ERR_ARG);
    lsq_st_close(f);
}

/* Offsets need not be aligned: a 3-byte U8 tensor pushes the F32/F16/F64 data to odd addresses. */
static void test_unaligned(void)
{
    char path[128];
    tmp_path(path, sizeof path, "unaligned.safetensors");
    const char *hdr = "{\"pad\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[3,11]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[11,13]},"
                      "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[13,21]}}";
    uint8_t data[21] = {1, 2, 3};
    float a[2] = {1.5f, -2.25f};
    uint16_t hv = 0x3800; /* 0.5 */
    double dv = 3.0;
    memcpy(data + 3, a, 8);
    memcpy(data + 11, &hv, 2);
    memcpy(data + 13, &dv, 8);
    static uint8_t buf[1024];
    size_t n = make_file(buf, strlen(hdr), hdr, data, sizeof data); /* odd header length too */
    write_bytes(path, buf, n);
    lsq_error err = {{0}};
    lsq_st_file *f = NULL;
    CHECK(lsq_st_open(path, &f, &err) == LSQ_OK);
    if (!f) {
        printf("#   %s\n", err.msg);
        return;
    }
    float out[2];
    CHECK(lsq_st_read_f32(f, "a", 1, (int64_t[]){2}, out, &err) == LSQ_OK && out[0] == 1.5f && out[1] == -2.25f);
    CHECK(lsq_st_read_f32(f, "h", 1, (int64_t[]){1}, out, &err) == LSQ_OK && out[0] == 0.5f);
    CHECK(lsq_st_read_f32(f, "d", 1, (int64_t[]){1}, out, &err) == LSQ_OK && out[0] == 3.0f);
    lsq_st_close(f);
}

/* ---------------------------------------------------------------------------------------------
 * Hostile files
 * ------------------------------------------------------------------------------------------- */

#define T1 "\"blocks.0.0.conv_dw.weight\""
#define OK_ENTRY "{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}"

typedef struct {
    const char *what;
    const char *header; /* NULL: raw bytes in `raw` */
    int64_t hlen;       /* -1: strlen(header) */
    size_t dlen;        /* data bytes after the header */
    lsq_status want;
    const char *msg; /* substring the message must contain (besides the path) */
} hostile_case;

static const hostile_case hostile[] = {
    {"garbage json", "{abc", -1, 0, LSQ_ERR_FORMAT, "not valid JSON"},
    {"empty header", "", 0, 16, LSQ_ERR_FORMAT, "not valid JSON"},
    {"length past EOF", "{}", 1000, 0, LSQ_ERR_FORMAT, "runs past the end of the file"},
    {"length over limit", "{}", 100000001, 0, LSQ_ERR_FORMAT, "exceeds the limit"},
    {"length 2^64-1", "{}", -2, 0, LSQ_ERR_FORMAT, "exceeds the limit"},
    {"not utf-8", "{\"a\xff\":" OK_ENTRY "}", -1, 16, LSQ_ERR_FORMAT, "not valid JSON"},
    {"lone surrogate", "{\"a\\ud800\":" OK_ENTRY "}", -1, 16, LSQ_ERR_FORMAT, "not valid JSON"},
    {"nul in name", "{\"a\\u0000b\":" OK_ENTRY "}", -1, 16, LSQ_ERR_FORMAT, "not valid JSON"},
    {"top-level array", "[1, 2]", -1, 0, LSQ_ERR_FORMAT, "not a JSON object"},
    {"trailing garbage", "{} x", -1, 0, LSQ_ERR_FORMAT, "not valid JSON"},
    {"entry not object", "{" T1 ":[1]}", -1, 0, LSQ_ERR_FORMAT, "'blocks.0.0.conv_dw.weight'"},
    {"empty name", "{\"\":" OK_ENTRY "}", -1, 16, LSQ_ERR_FORMAT, "empty name"},
    {"missing dtype", "{" T1 ":{\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 16, LSQ_ERR_FORMAT,
     "'blocks.0.0.conv_dw.weight': missing \"dtype\""},
    {"missing shape", "{" T1 ":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", -1, 16, LSQ_ERR_FORMAT,
     "'blocks.0.0.conv_dw.weight': missing \"shape\""},
    {"missing offsets", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[4]}}", -1, 16, LSQ_ERR_FORMAT,
     "'blocks.0.0.conv_dw.weight': missing \"data_offsets\""},
    {"dtype not string", "{" T1 ":{\"dtype\":4,\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 16, LSQ_ERR_FORMAT,
     "\"dtype\" is not a string"},
    {"unknown dtype", "{" T1 ":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", -1, 4, LSQ_ERR_TENSOR,
     "'blocks.0.0.conv_dw.weight': unknown dtype 'F8_E4M3'"},
    {"lowercase dtype", "{" T1 ":{\"dtype\":\"f32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 16, LSQ_ERR_TENSOR,
     "unknown dtype 'f32'"},
    {"shape not array", "{" T1 ":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", -1, 16, LSQ_ERR_FORMAT,
     "\"shape\" is not an array"},
    {"negative dim", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", -1, 16, LSQ_ERR_TENSOR,
     "shape[0] is not a non-negative integer"},
    {"float dim", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[4.0],\"data_offsets\":[0,16]}}", -1, 16, LSQ_ERR_TENSOR,
     "shape[0] is not a non-negative integer"},
    {"string dim", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[2,\"2\"],\"data_offsets\":[0,16]}}", -1, 16,
     LSQ_ERR_TENSOR, "shape[1]"},
    {"too many dims", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]}}", -1, 16,
     LSQ_ERR_TENSOR, "9 dimensions"},
    {"numel overflow", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,16]}}", -1,
     16, LSQ_ERR_TENSOR, "overflows"},
    {"bytes overflow", "{" T1 ":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,16]}}", -1, 16,
     LSQ_ERR_TENSOR, "overflows"},
    {"huge integer", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,16]}}", -1, 16,
     LSQ_ERR_FORMAT, "not valid JSON"},
    {"offsets not array", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":16}}", -1, 16, LSQ_ERR_FORMAT,
     "'blocks.0.0.conv_dw.weight': \"data_offsets\" is not"},
    {"offsets length 3", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16,16]}}", -1, 16,
     LSQ_ERR_FORMAT, "\"data_offsets\" is not"},
    {"negative offset", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[-16,-16]}}", -1, 0,
     LSQ_ERR_FORMAT, "\"data_offsets\" is not"},
    {"begin > end", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", -1, 16, LSQ_ERR_TENSOR,
     "data_offsets [16, 0] has begin > end"},
    {"end past data", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[10,20]}}", -1, 16,
     LSQ_ERR_TENSOR, "tensor 'blocks.0.0.conv_dw.weight': data_offsets [10, 20] exceed the data section (16 bytes)"},
    {"huge end",
     "{" T1 ":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[9223372036854775800,9223372036854775807]}}",
     -1, 16, LSQ_ERR_TENSOR, "exceed the data section"},
    {"size mismatch", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", -1, 16, LSQ_ERR_TENSOR,
     "span 16 bytes, but F32 [3] needs 12"},
    {"duplicate name", "{" T1 ":" OK_ENTRY "," T1 ":" OK_ENTRY "}", -1, 16, LSQ_ERR_FORMAT,
     "duplicate key 'blocks.0.0.conv_dw.weight' in the header"},
    {"duplicate field", "{" T1 ":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 16,
     LSQ_ERR_FORMAT, "duplicate key 'dtype'"},
    {"duplicate escaped", "{\"a\\\"b\\\\\":" OK_ENTRY ",\"a\\\"b\\\\\":" OK_ENTRY "}", -1, 16, LSQ_ERR_FORMAT,
     "duplicate key 'a\\\"b\\\\'"},
    {"metadata not object", "{\"__metadata__\":[\"a\"]," T1 ":" OK_ENTRY "}", -1, 16, LSQ_ERR_FORMAT,
     "__metadata__ is not a JSON object"},
    {"metadata number", "{\"__metadata__\":{\"format\":\"pt\",\"version\":1}," T1 ":" OK_ENTRY "}", -1, 16,
     LSQ_ERR_FORMAT, "__metadata__ value of 'version' is not a string"},
    {"metadata null", "{\"__metadata__\":{\"x\":null}}", -1, 0, LSQ_ERR_FORMAT, "'x' is not a string"},
    {"overlap", "{\"a\":" OK_ENTRY "," T1 ":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", -1, 16,
     LSQ_ERR_TENSOR, "'blocks.0.0.conv_dw.weight': data_offsets [8, 16] overlap"},
    {"gap", "{" T1 ":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", -1, 16, LSQ_ERR_TENSOR,
     "'blocks.0.0.conv_dw.weight': data_offsets [8, 16] leave a gap"},
    {"trailing data", "{" T1 ":" OK_ENTRY "}", -1, 24, LSQ_ERR_FORMAT, "cover 16 bytes, but the data section has 24"},
};

static void test_hostile_battery(void)
{
    char path[128];
    tmp_path(path, sizeof path, "hostile.safetensors");
    static uint8_t buf[4096];
    uint8_t zeros[64] = {0};
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        const hostile_case *c = &hostile[i];
        uint64_t hlen = c->hlen == -1 ? strlen(c->header) : c->hlen == -2 ? UINT64_MAX : (uint64_t)c->hlen;
        size_t n = make_file(buf, hlen, c->header, zeros, c->dlen);
        write_bytes(path, buf, n);
        lsq_error err = {{0}};
        lsq_st_file *f = (lsq_st_file *)&err; /* must be reset to NULL on failure */
        lsq_status st = lsq_st_open(path, &f, &err);
        if (st != c->want || f != NULL || !has(err.msg, path) || !has(err.msg, c->msg)) {
            printf("#   case '%s': status %s (want %s), message '%s' (want '%s')\n", c->what,
                   lsq_status_to_string(st), lsq_status_to_string(c->want), err.msg, c->msg);
            unit_cur_failed = 1;
        }
        if (st == LSQ_OK) lsq_st_close(f);
    }
}

static void expect_open_fails(const char *path, const uint8_t *bytes, size_t n, lsq_status want, const char *sub)
{
    if (bytes) write_bytes(path, bytes, n);
    lsq_error err = {{0}};
    lsq_st_file *f = NULL;
    lsq_status st = lsq_st_open(path, &f, &err);
    if (st != want || f || !has(err.msg, path) || !has(err.msg, sub)) {
        printf("#   %s (%zu bytes): status %s, message '%s' (want '%s')\n", path, n, lsq_status_to_string(st),
               err.msg, sub);
        unit_cur_failed = 1;
    }
    lsq_st_close(f);
}

static void test_hostile_files(void)
{
    char path[128];
    tmp_path(path, sizeof path, "short.safetensors");
    uint8_t b[8] = {2, 0, 0, 0, 0, 0, 0, 0};
    expect_open_fails(path, b, 0, LSQ_ERR_FORMAT, "0 bytes, too short");
    expect_open_fails(path, b, 5, LSQ_ERR_FORMAT, "5 bytes, too short");
    expect_open_fails(path, b, 8, LSQ_ERR_FORMAT, "runs past the end");
    tmp_path(path, sizeof path, "does-not-exist.safetensors");
    expect_open_fails(path, NULL, 0, LSQ_ERR_IO, "No such file");
    expect_open_fails(tmpdir, NULL, 0, LSQ_ERR_IO, "not a regular file");
    tmp_path(path, sizeof path, "fifo.safetensors");
    CHECK(mkfifo(path, 0600) == 0);
    expect_open_fails(path, NULL, 0, LSQ_ERR_IO, "not a regular file"); /* and does not block */

    /* nesting far beyond jansson's depth limit must be an error, not a stack overflow */
    size_t depth = 100000;
    uint8_t *deep = malloc(8 + 2 * depth);
    char *h = malloc(2 * depth + 1);
    memset(h, '[', depth);
    memset(h + depth, ']', depth);
    h[2 * depth] = 0;
    size_t n = make_file(deep, 2 * depth, h, NULL, 0);
    tmp_path(path, sizeof path, "deep.safetensors");
    expect_open_fails(path, deep, n, LSQ_ERR_FORMAT, "not valid JSON");
    free(deep);
    free(h);
}

static void write_reference_file(const char *path)
{
    lsq_error err = {{0}};
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {0x3c00, 0x0001, 0x8000};
    int8_t q[5] = {1, -1, 2, -2, 3};
    lsq_st_writer *w = lsq_st_writer_create();
    lsq_st_writer_set_metadata(w, "arch", "efficientnet_b0", &err);
    lsq_st_writer_set_metadata(w, "format_version", "1", &err);
    lsq_st_writer_add(w, "conv_stem.weight", LSQ_ST_F32, 4, (int64_t[]){1, 2, 3, 1}, a, &err);
    lsq_st_writer_add(w, "bn1.bias", LSQ_ST_F16, 1, (int64_t[]){3}, h, &err);
    lsq_st_writer_add(w, "q", LSQ_ST_I8, 1, (int64_t[]){5}, q, &err);
    lsq_st_writer_add(w, "z", LSQ_ST_F32, 1, (int64_t[]){0}, NULL, &err);
    if (lsq_st_writer_save(w, path, &err) != LSQ_OK) abort();
    lsq_st_writer_free(w);
}

/* Every prefix of a valid file either opens consistently (only the full file can) or fails with
 * a format/tensor error naming the file. */
static void test_truncation(void)
{
    char src[128], path[128];
    tmp_path(src, sizeof src, "full.safetensors");
    tmp_path(path, sizeof path, "trunc.safetensors");
    write_reference_file(src);
    size_t size;
    uint8_t *full = slurp(src, &size);
    int opened = 0, failed = 0;
    for (size_t len = 0; len <= size; len++) {
        write_bytes(path, full, len);
        lsq_error err = {{0}};
        lsq_st_file *f = NULL;
        lsq_status st = lsq_st_open(path, &f, &err);
        if (st == LSQ_OK) {
            opened++;
            CHECK(len == size && consistent(f, full, len) && lsq_st_count(f) == 4);
            float out[6];
            CHECK(lsq_st_read_f32(f, "conv_stem.weight", 4, (int64_t[]){1, 2, 3, 1}, out, &err) == LSQ_OK);
            CHECK(out[5] == 6);
            lsq_st_close(f);
        } else {
            failed++;
            CHECK(f == NULL && (st == LSQ_ERR_FORMAT || st == LSQ_ERR_TENSOR) && has(err.msg, path));
        }
    }
    CHECK(opened == 1 && failed == (int)size);
    free(full);
}

/* Random byte corruption of a valid file: never crashes, and whatever opens is consistent. */
static void test_corruption(void)
{
    char src[128], path[128];
    tmp_path(src, sizeof src, "full.safetensors");
    tmp_path(path, sizeof path, "corrupt.safetensors");
    write_reference_file(src);
    size_t size;
    uint8_t *full = slurp(src, &size);
    uint8_t *buf = malloc(size);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    static const char interesting[] = "0123456789[]{}\",:-. eE\\\xff";
    int opened = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, full, size);
        int flips = 1 + iter % 3;
        for (int k = 0; k < flips; k++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            size_t pos = (size_t)(rng % size);
            size_t pick = (size_t)(rng >> 40) % (sizeof interesting - 1);
            buf[pos] = (rng >> 32) & 1 ? (uint8_t)(rng >> 40) : (uint8_t)interesting[pick];
        }
        write_bytes(path, buf, size);
        lsq_error err = {{0}};
        lsq_st_file *f = NULL;
        lsq_status st = lsq_st_open(path, &f, &err);
        if (st == LSQ_OK) {
            opened++;
            CHECK(consistent(f, buf, size));
            float out[6];
            for (int i = 0; i < lsq_st_count(f); i++) {
                const lsq_st_tensor *t = lsq_st_get(f, i);
                if (t->numel <= 6) (void)lsq_st_read_f32(f, t->name, t->ndim, t->shape, out, &err);
            }
            lsq_st_close(f);
        } else {
            CHECK(f == NULL && has(err.msg, path));
        }
    }
    printf("# corruption: %d of 3000 corrupted files still opened (data-only changes)\n", opened);
    free(buf);
    free(full);
}

static void cleanup(void)
{
    static const char *names[] = {"rt.safetensors",    "rt2.safetensors",   "empty.safetensors",
                                  "many.safetensors",  "model.safetensors", "unaligned.safetensors",
                                  "hostile.safetensors", "short.safetensors", "deep.safetensors", "fifo.safetensors",
                                  "full.safetensors",  "trunc.safetensors", "corrupt.safetensors"};
    char path[160];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tmp_path(path, sizeof path, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lsq_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_dtype_table);
    RUN(test_f16_known_bits);
    RUN(test_f16_exhaustive);
    RUN(test_bf16_known_bits);
    RUN(test_round_trip);
    RUN(test_empty_writer);
    RUN(test_writer_errors);
    RUN(test_many_tensors_lookup);
    RUN(test_read_f32_errors);
    RUN(test_unaligned);
    RUN(test_hostile_battery);
    RUN(test_hostile_files);
    RUN(test_truncation);
    RUN(test_corruption);
    cleanup();
    return unit_done();
}
