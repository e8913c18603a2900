/* subcommands.h: the handler of every subcommand, grouped by the file
 * that owns it, in the order of fastqcow.c's command table (its only
 * user). Private to the tool. A subcommand of several files has a folder
 * of its own (io/, and the exports to come: serve/, mount/); its handler
 * lives in the folder and is declared here like the others.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_SUBCOMMANDS_H
#define FQ_TOOLS_SUBCOMMANDS_H

/* Each handler gets the subcommand's command line (argv[0] is its name)
 * and returns the exit code. */

/* create.c */
int cmd_create(int argc, char **argv);
/* info.c */
int cmd_info(int argc, char **argv);
/* check.c */
int cmd_check(int argc, char **argv);
/* map.c */
int cmd_map(int argc, char **argv);
/* compare.c */
int cmd_compare(int argc, char **argv);
/* convert.c */
int cmd_convert(int argc, char **argv);
/* io/interpreter.c */
int cmd_io(int argc, char **argv);
/* bench.c */
int cmd_bench(int argc, char **argv);
/* gen.c */
int cmd_gen(int argc, char **argv);
/* bitmap.c */
int cmd_bitmap(int argc, char **argv);
/* snapshot.c */
int cmd_snapshot(int argc, char **argv);
/* resize.c */
int cmd_resize(int argc, char **argv);
/* amend.c */
int cmd_amend(int argc, char **argv);
/* measure.c */
int cmd_measure(int argc, char **argv);
/* rebase.c */
int cmd_rebase(int argc, char **argv);
/* commit.c */
int cmd_commit(int argc, char **argv);
/* dd.c */
int cmd_dd(int argc, char **argv);
/* serve/serve.c */
int cmd_serve(int argc, char **argv);
/* mount/options.c */
int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);
/* defrag.c */
int cmd_defrag(int argc, char **argv);

#endif
