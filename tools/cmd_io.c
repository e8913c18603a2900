#include "tool.h"
int cmd_io(int argc, char **argv) { tool_error("io: not built yet"); return 1; }
