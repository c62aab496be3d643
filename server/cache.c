/* cache.c - the server's on-disk cache: its folder and the keys of its files (cache.h). */
#include "cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *cache_dir(const server_options *o, char *buf, size_t len)
{
    const char *dir = o->cache_dir;
    if (!dir) {
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (xdg && *xdg) snprintf(buf, len, "%s/lsq", xdg);
        else if (home && *home) snprintf(buf, len, "%s/.cache/lsq", home);
        else return NULL;
        dir = buf;
    }
    return *dir ? dir : NULL;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

uint64_t cache_key(const char *file, const char *extra)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    FILE *f = fopen(file, "rb");
    if (!f) return 0;
    static __thread uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) h = fnv1a(h, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) return 0;
    return fnv1a(h, extra, strlen(extra)) | 1;
}

int cache_mkdirs(const char *dir)
{
    char d[4096];
    int n = snprintf(d, sizeof d, "%s/", dir);
    if (n < 0 || (size_t)n >= sizeof d) return -1;
    for (char *p = d + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(d, 0755); /* errors show in the stat below: EEXIST is fine, and a parent we cannot
                               search may still hold a folder we can write */
            *p = '/';
        }
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}
