/* standalone.c: a main() that runs a libFuzzer target over files, for
 * builds without libFuzzer (gcc, debugging, replaying a crash):
 *   cc fuzz-image.c standalone.c ... && ./a.out crash-1234 seeds/*
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *d = malloc(n > 0 ? (size_t)n : 1);
        if (!d || fread(d, 1, (size_t)n, f) != (size_t)n) {
            fprintf(stderr, "%s: read error\n", argv[i]);
            return 1;
        }
        fclose(f);
        fprintf(stderr, "running %s (%ld bytes)\n", argv[i], n);
        LLVMFuzzerTestOneInput(d, (size_t)n);
        free(d);
    }
    return 0;
}
