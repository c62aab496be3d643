/* http.h - the HTTP front: libmicrohttpd daemon (epoll thread pool, suspend/resume), request
 * intake, routing to endpoints and the queue, responses, request ids and the access log. */
#ifndef LSQ_SERVER_HTTP_H
#define LSQ_SERVER_HTTP_H

#include <stdatomic.h>

#include "metrics.h"
#include "models.h"
#include "options.h"
#include "pool.h"
#include "report.h"

typedef struct http_server {
    const server_options *opt;
    const model_registry *reg;
    pool *pool;
    metrics *metrics;
    report *report;
    atomic_int ready;    /* /v2/health/ready and /ping answer 200 */
    atomic_int draining; /* responses carry Connection: close */
    atomic_int active;   /* requests between arrival and completion */
    atomic_ullong next_id;
    int port;            /* the bound port */
    struct MHD_Daemon *daemon;
} http_server;

int http_start(http_server *s, char *err, size_t errlen);
/* Stop accepting connections; requests already accepted go on. */
void http_quiesce(http_server *s);
void http_stop(http_server *s);

#endif
