/* cli.h - subcommands of the `lsq` command-line tool (engine/cli/lsq.c dispatches to them). */
#ifndef LSQ_CLI_H
#define LSQ_CLI_H

int cmd_classify(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);

#endif
