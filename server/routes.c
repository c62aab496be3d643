/* routes.c - maps (method, path) to an endpoint; path segments become model and config names. */
#include "routes.h"

#include <stdio.h>
#include <string.h>

#define MAX_SEG 8

/* Split "/a/b/c" into segments (no empty ones except a trailing slash, which is refused). */
static int split(const char *url, char seg[MAX_SEG][128])
{
    int n = 0;
    if (url[0] != '/') return -1;
    const char *p = url + 1;
    if (!*p) return 0;
    for (;;) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (!len || len >= 128 || n == MAX_SEG) return -1;
        memcpy(seg[n], p, len);
        seg[n++][len] = 0;
        if (!q) return n;
        p = q + 1;
    }
}

static int set(route *r, route_id id, const char *method, const char *want, int inference)
{
    r->id = id;
    r->inference = inference;
    r->allow = want;
    if (!strcmp(want, "POST, PUT")) r->method_ok = !strcmp(method, "POST") || !strcmp(method, "PUT");
    else if (!strcmp(want, "GET, HEAD")) r->method_ok = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    else r->method_ok = !strcmp(method, want);
    return 0;
}

int route_match(const char *method, const char *url, route *r)
{
    char s[MAX_SEG][128];
    memset(r, 0, sizeof *r);
    int n = split(url, s);
    if (n < 0) return -1;
    if (n == 0 || (n == 1 && !strcmp(s[0], "index.html"))) return set(r, ROUTE_INDEX, method, "GET, HEAD", 0);
    if (n == 1 && !strcmp(s[0], "ping")) return set(r, ROUTE_PING, method, "GET, HEAD", 0);
    if (n == 1 && !strcmp(s[0], "metrics")) return set(r, ROUTE_METRICS, method, "GET, HEAD", 0);
    if (n == 2 && !strcmp(s[0], "v1")) {
        if (!strcmp(s[1], "models")) return set(r, ROUTE_V1_MODELS, method, "GET, HEAD", 0);
        if (!strcmp(s[1], "report")) return set(r, ROUTE_V1_REPORT, method, "GET, HEAD", 0);
        if (!strcmp(s[1], "classify")) return set(r, ROUTE_V1_CLASSIFY, method, "POST", 1);
        return -1;
    }
    if ((n == 2 || n == 3) && !strcmp(s[0], "predictions")) {
        snprintf(r->model, sizeof r->model, "%s", s[1]);
        if (n == 3) snprintf(r->config, sizeof r->config, "%s", s[2]);
        return set(r, ROUTE_PREDICT, method, "POST, PUT", 1);
    }
    if (n >= 1 && !strcmp(s[0], "v2")) {
        if (n == 1) return set(r, ROUTE_V2_SERVER, method, "GET, HEAD", 0);
        if (n == 3 && !strcmp(s[1], "health") && !strcmp(s[2], "live")) return set(r, ROUTE_V2_LIVE, method, "GET, HEAD", 0);
        if (n == 3 && !strcmp(s[1], "health") && !strcmp(s[2], "ready"))
            return set(r, ROUTE_V2_READY, method, "GET, HEAD", 0);
        if (n >= 3 && !strcmp(s[1], "models")) {
            snprintf(r->model, sizeof r->model, "%s", s[2]);
            int at = 3;
            if (n >= 5 && !strcmp(s[3], "versions")) {
                snprintf(r->config, sizeof r->config, "%s", s[4]);
                at = 5;
            }
            if (n == at) return set(r, ROUTE_V2_MODEL, method, "GET, HEAD", 0);
            if (n == at + 1 && !strcmp(s[at], "ready")) return set(r, ROUTE_V2_MODEL_READY, method, "GET, HEAD", 0);
            if (n == at + 1 && !strcmp(s[at], "infer")) return set(r, ROUTE_V2_INFER, method, "POST", 1);
        }
    }
    return -1;
}
