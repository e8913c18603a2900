#include "tool.h"
int cmd_gen(int argc, char **argv) { tool_error("gen: not built yet"); return 1; }
