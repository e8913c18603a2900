/* cmd_img.c: placeholder until the qemu-img style subcommands land. */
#include "tool.h"
int cmd_create(int argc, char **argv) { tool_error("create: not built yet"); return 1; }
int cmd_info(int argc, char **argv) { tool_error("info: not built yet"); return 1; }
int cmd_check(int argc, char **argv) { tool_error("check: not built yet"); return 1; }
int cmd_map(int argc, char **argv) { tool_error("map: not built yet"); return 1; }
int cmd_compare(int argc, char **argv) { tool_error("compare: not built yet"); return 1; }
int cmd_convert(int argc, char **argv) { tool_error("convert: not built yet"); return 1; }
