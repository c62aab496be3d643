/* web.h - the web page served at GET / (server/web/index.html, embedded at build time). */
#ifndef LSQ_SERVER_WEB_H
#define LSQ_SERVER_WEB_H

#include <stddef.h>

extern const char web_index[];
extern const size_t web_index_len;

#endif
