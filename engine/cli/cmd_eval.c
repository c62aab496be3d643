/* cmd_eval.c - `lsq eval`: accuracy and latency of one or more configurations on a labelled set.
 *
 * Every image goes through the checkpoint's own preprocessing and one batch-1 inference; the
 * latency percentiles time the inference alone (lsq_session_run), throughput is images per
 * second of inference on one stream. Class indices: the dataset's (IDX labels, labels.txt, or
 * folder order); when the dataset's folder names are all among the model's labels, by name. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char eval_help[] =
    "usage: lsq eval --model M.safetensors [--config C]... --data DIR [--split test|train] [--limit N]\n"
    "                [--threads T] [--arch A] [--json OUT|-]\n"
    "Top-1, top-5 and per-class accuracy, batch-1 latency p50/p90/p99, throughput and model bytes for\n"
    "each configuration (default: the file's own). DIR holds IDX files (gzipped or not), images with\n"
    "a labels.txt ('<file> <class>' lines), or one folder of images per class.\n";

#define MAX_CONFIGS 16

typedef struct {
    char config[64], arch[32]; /* config: the canonical name, <= 63 characters */
    int n, top1, top5, classes;
    int *class_total, *class_correct; /* per model class */
    double p50, p90, p99, infer_total_ms;
    long long model_bytes;
} eval_result;

static int eval_progress(void *user, int done, int total, int top1)
{
    if (done % 64 == 0 || done == total)
        fprintf(stderr, "\r%-10s %6d/%d  top-1 %6.2f%%", (const char *)user, done, total, 100.0 * top1 / done);
    return 0;
}

static int eval_one(const char *model_path, const char *arch, const char *config, const lsq_dataset *ds, int limit,
                    int threads, eval_result *r)
{
    lsq_model *m = cli_load_model("eval", model_path, arch, config);
    if (!m) return 1;
    int nm = lsq_model_num_classes(m), rc = 1, tty = isatty(2);
    lsq_error err = {{0}};
    snprintf(r->config, sizeof r->config, "%s", lsq_model_config(m));
    snprintf(r->arch, sizeof r->arch, "%s", lsq_model_arch(m));
    r->classes = nm;
    r->model_bytes = lsq_model_file_bytes(m);
    r->class_total = calloc((size_t)nm, sizeof(int));
    r->class_correct = calloc((size_t)nm, sizeof(int));
    if (!r->class_total || !r->class_correct) {
        cli_error("eval", "out of memory");
        goto done;
    }
    lsq_eval_options eo = {.limit = limit, .threads = threads, .progress = tty ? eval_progress : NULL,
                           .user = r->config, .class_total = r->class_total, .class_correct = r->class_correct};
    lsq_eval_result er;
    if (lsq_eval(m, ds, &eo, &er, &err)) {
        if (tty) fputc('\n', stderr);
        cli_error("eval", "%s", err.msg);
        goto done;
    }
    if (tty) fputc('\n', stderr);
    r->n = er.images;
    r->top1 = er.top1;
    r->top5 = er.top5;
    r->p50 = er.p50_ms;
    r->p90 = er.p90_ms;
    r->p99 = er.p99_ms;
    r->infer_total_ms = er.infer_total_ms;
    rc = 0;
done:
    lsq_model_free(m);
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *json = NULL, *arch = NULL, *split = NULL;
    const char *configs[MAX_CONFIGS];
    int nconfigs = 0;
    long limit = 0, threads = 1;
    static const struct option opts[] = {{"model", 1, 0, 'm'}, {"config", 1, 0, 'c'}, {"data", 1, 0, 'd'},
                                         {"json", 1, 0, 'j'},  {"limit", 1, 0, 'n'},  {"threads", 1, 0, 't'},
                                         {"arch", 1, 0, 'a'},  {"split", 1, 0, 's'},  {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'd': data = optarg; break;
        case 'j': json = optarg; break;
        case 'a': arch = optarg; break;
        case 's':
            if (strcmp(optarg, "test") && strcmp(optarg, "train")) return cli_usage("eval", "--split is test or train");
            split = optarg;
            break;
        case 'c':
            if (nconfigs == MAX_CONFIGS) return cli_usage("eval", "at most %d --config", MAX_CONFIGS);
            configs[nconfigs++] = optarg;
            break;
        case 'n':
            if (cli_parse_int(optarg, 1, 100000000, &limit)) return cli_usage("eval", "--limit must be positive");
            break;
        case 't':
            if (cli_parse_int(optarg, 1, 256, &threads)) return cli_usage("eval", "--threads must be 1..256");
            break;
        case 'h': fputs(eval_help, stdout); return 0;
        default: return cli_usage("eval", "unknown option");
        }
    }
    if (!model || !data || optind != argc) return cli_usage("eval", "--model and --data are required");
    if (!nconfigs) configs[nconfigs++] = NULL; /* the file's own configuration */
    lsq_dataset *ds = NULL;
    lsq_error err = {{0}};
    if (lsq_dataset_open(data, split, &ds, &err)) return cli_error("eval", "%s", err.msg);
    eval_result res[MAX_CONFIGS];
    memset(res, 0, sizeof res);
    int rc = 0, done = 0;
    for (int i = 0; i < nconfigs && !rc; i++, done++)
        rc = eval_one(model, arch, configs[i], ds, (int)limit, (int)threads, &res[i]);
    if (!rc) {
        printf("dataset: %s\n%-12s %8s %8s %9s %9s %9s %10s %12s\n", lsq_dataset_describe(ds), "config", "top-1",
               "top-5", "p50_ms", "p90_ms", "p99_ms", "img/s", "model_bytes");
        for (int i = 0; i < nconfigs; i++)
            printf("%-12s %7.2f%% %7.2f%% %9.3f %9.3f %9.3f %10.1f %12lld\n", res[i].config, 100.0 * res[i].top1 / res[i].n,
                   100.0 * res[i].top5 / res[i].n, res[i].p50, res[i].p90, res[i].p99,
                   res[i].n / (res[i].infer_total_ms / 1e3), res[i].model_bytes);
    }
    if (!rc && json) {
        FILE *f = strcmp(json, "-") ? fopen(json, "w") : stdout;
        if (!f) {
            rc = cli_error("eval", "%s: cannot write", json);
        } else {
            fprintf(f, "{\"dataset\":\"%s\",\"images\":%d,\"threads\":%ld,\"results\":[", data, res[0].n, threads);
            for (int i = 0; i < nconfigs; i++) {
                eval_result *r = &res[i];
                fprintf(f,
                        "%s{\"arch\":\"%s\",\"config\":\"%s\",\"top1\":%.6f,\"top5\":%.6f,\"latency_ms\":{\"p50\":%.4f,"
                        "\"p90\":%.4f,\"p99\":%.4f},\"throughput_ips\":%.2f,\"model_bytes\":%lld,\"per_class\":[",
                        i ? "," : "", r->arch, r->config, (double)r->top1 / r->n, (double)r->top5 / r->n, r->p50, r->p90,
                        r->p99, r->n / (r->infer_total_ms / 1e3), r->model_bytes);
                int first = 1;
                for (int k = 0; k < r->classes; k++) {
                    fprintf(f, "%s{\"class\":%d,\"images\":%d,\"top1\":%.6f}", first ? "" : ",", k, r->class_total[k],
                            r->class_total[k] ? (double)r->class_correct[k] / r->class_total[k] : 0.0);
                    first = 0;
                }
                fprintf(f, "]}");
            }
            fprintf(f, "]}\n");
            if (f != stdout) fclose(f);
        }
    }
    for (int i = 0; i < done; i++) {
        free(res[i].class_total);
        free(res[i].class_correct);
    }
    lsq_dataset_free(ds);
    return rc;
}
