// The serving benchmarks' handler that touches 1 MiB of its memory per request (WAGI), as a
// handler that builds a response in a buffer would.
#include <stdio.h>
#include <string.h>

static unsigned char buffer[1 << 20];

int main(void) {
    memset(buffer, 'x', sizeof buffer);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof buffer; i += 4096) {
        sum += buffer[i];
    }
    printf("Content-Type: text/plain\n\n%u\n", sum);
    return 0;
}
