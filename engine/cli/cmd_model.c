/* cmd_model.c - `lsq inspect` and `lsq init`: looking at checkpoints and making random ones. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char inspect_help[] =
    "usage: lsq inspect [--arch A] M.safetensors\n"
    "Prints the architecture, classes, parameter count, layers, metadata and tensors.\n";

int cmd_inspect(int argc, char **argv)
{
    const char *arch = NULL;
    static const struct option opts[] = {{"arch", 1, 0, 'a'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'a') arch = optarg;
        else if (c == 'h') return fputs(inspect_help, stdout), 0;
        else return cli_usage("inspect", "unknown option");
    }
    if (optind != argc - 1) return cli_usage("inspect", "exactly one checkpoint is required");
    lsq_model *m = cli_load_model("inspect", argv[optind], arch, NULL);
    if (!m) return 1;
    size_t need = lsq_model_describe(m, NULL, 0) + 1;
    char *buf = malloc(need);
    if (!buf) {
        lsq_model_free(m);
        return cli_error("inspect", "out of memory");
    }
    lsq_model_describe(m, buf, need);
    fputs(buf, stdout);
    free(buf);
    lsq_model_free(m);
    return 0;
}

static const char init_help[] =
    "usage: lsq init --arch A [--classes N] [--seed S] --out M.safetensors\n"
    "Writes a checkpoint with seeded random weights and randomised BatchNorm statistics.\n";

int cmd_init(int argc, char **argv)
{
    const char *arch = NULL, *out = NULL;
    long classes = 1000, seed = 0;
    static const struct option opts[] = {{"arch", 1, 0, 'a'}, {"classes", 1, 0, 'n'}, {"seed", 1, 0, 's'},
                                         {"out", 1, 0, 'o'},  {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'a': arch = optarg; break;
        case 'o': out = optarg; break;
        case 'n':
            if (cli_parse_int(optarg, 1, 100000, &classes)) return cli_usage("init", "--classes must be 1..100000");
            break;
        case 's':
            if (cli_parse_int(optarg, 0, 0x7fffffffL, &seed)) return cli_usage("init", "--seed must be a non-negative integer");
            break;
        case 'h': fputs(init_help, stdout); return 0;
        default: return cli_usage("init", "unknown option");
        }
    }
    if (!arch || !out) return cli_usage("init", "--arch and --out are required");
    lsq_error err = {{0}};
    if (lsq_model_init_random(arch, (int)classes, (uint64_t)seed, out, &err)) return cli_error("init", "%s", err.msg);
    return 0;
}
