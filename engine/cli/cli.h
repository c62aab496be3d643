/* cli.h - subcommands of the `lsq` command-line tool (engine/cli/lsq.c dispatches to them). */
#ifndef LSQ_CLI_H
#define LSQ_CLI_H

int cmd_classify(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_quantize(int argc, char **argv);



/* ---- helpers shared by the subcommands (lsq.c) ---- */
#include <stdint.h>

#include "lsq.h"

/* Print "lsq <cmd>: <message>" to stderr; returns 1 (the exit status for runtime errors). */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Usage error: message + hint, returns 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Strict integer parsing: the whole string, within [lo, hi]. */
int cli_parse_int(const char *s, long lo, long hi, long *out);
/* Load a model, printing the engine's message on failure. */
lsq_model *cli_load_model(const char *cmd, const char *path, const char *arch, const char *config);
double cli_now_ms(void);
/* Sort n timings ascending, in place, and read the q-quantile (nearest rank) of sorted ones. */
void cli_sort(double *t, int n);
double cli_percentile(const double *sorted, int n, double q);
#endif
