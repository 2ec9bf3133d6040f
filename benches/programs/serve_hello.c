// The serving benchmarks' hello handler (WAGI): a fixed greeting.
#include <stdio.h>

int main(void) {
    fputs("Content-Type: text/plain\n\nHello, world!\n", stdout);
    return 0;
}
