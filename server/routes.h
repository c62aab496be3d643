/* routes.h - the URL space: which endpoint a method and path name, and their path parameters. */
#ifndef LSQ_SERVER_ROUTES_H
#define LSQ_SERVER_ROUTES_H

typedef enum {
    ROUTE_NONE = 0,
    ROUTE_INDEX,          /* GET  /                                   web page */
    ROUTE_PING,           /* GET  /ping                               TorchServe health */
    ROUTE_V1_MODELS,      /* GET  /v1/models */
    ROUTE_V1_REPORT,      /* GET  /v1/report */
    ROUTE_METRICS,        /* GET  /metrics */
    ROUTE_V1_CLASSIFY,    /* POST /v1/classify?model=&config=&topk= */
    ROUTE_PREDICT,        /* POST|PUT /predictions/{model}[/{config}] */
    ROUTE_V2_SERVER,      /* GET  /v2 */
    ROUTE_V2_LIVE,        /* GET  /v2/health/live */
    ROUTE_V2_READY,       /* GET  /v2/health/ready */
    ROUTE_V2_MODEL,       /* GET  /v2/models/{m}[/versions/{v}] */
    ROUTE_V2_MODEL_READY, /* GET  /v2/models/{m}[/versions/{v}]/ready */
    ROUTE_V2_INFER,       /* POST /v2/models/{m}[/versions/{v}]/infer */
} route_id;

typedef struct {
    route_id id;
    int method_ok;      /* 0: known path, wrong method (405) */
    const char *allow;  /* the Allow header for 405 */
    int inference;      /* takes a body, goes through the queue, needs the API key */
    char model[128];    /* path parameters, "" when absent */
    char config[128];
} route;

/* Returns 0 and fills r when the path is known (check r->method_ok), -1 for 404. */
int route_match(const char *method, const char *url, route *r);

#endif
