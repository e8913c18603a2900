#include "tool.h"
int cmd_bench(int argc, char **argv) { tool_error("bench: not built yet"); return 1; }
