/* endpoints.h - JSON bodies of the endpoints (no HTTP here: http.c sends them). */
#ifndef LSQ_SERVER_ENDPOINTS_H
#define LSQ_SERVER_ENDPOINTS_H

#include "job.h"
#include "models.h"

/* All return malloc'd JSON text (NULL on allocation failure). */
char *endpoint_models(const model_registry *reg);                       /* GET /v1/models */
char *endpoint_v2_server(void);                                         /* GET /v2 */
char *endpoint_v2_model(const model_registry *reg, const model_entry *e); /* GET /v2/models/{m}[/versions/{v}] */
char *endpoint_classify(const job *j, const char *request_id, double total_ms); /* a finished JOB_CLASSIFY */
char *endpoint_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
