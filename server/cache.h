/* cache.h - the server's on-disk cache (--cache-dir): where it is, and the keys of its files.
 *
 * Two things live there: the accuracy report's figures (report.c, accuracy-KEY.json) and the
 * calibrated configurations' packed checkpoints (calibrate.c, calib-KEY.safetensors). A key hashes
 * the checkpoint's bytes and a string of everything else the result depends on, engine version and
 * build included, so a stale entry is never read: it is simply not found. */
#ifndef LSQ_SERVER_CACHE_H
#define LSQ_SERVER_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "options.h"

/* The cache folder: --cache-dir, else $XDG_CACHE_HOME/lsq, else $HOME/.cache/lsq. NULL when there
 * is none (--cache-dir '', or neither variable set); otherwise buf or o->cache_dir. */
const char *cache_dir(const server_options *o, char *buf, size_t len);

/* FNV-1a 64 of the file's bytes followed by extra's; never 0. 0 when the file cannot be read. */
uint64_t cache_key(const char *file, const char *extra);

/* Create dir and its parents (mode 0755). 0 when it exists as a folder afterwards. */
int cache_mkdirs(const char *dir);

#endif
