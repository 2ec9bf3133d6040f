// The smallest WASI command: prints exactly "Hello, world!" and a newline.
#include <stdio.h>

int main(void) {
    puts("Hello, world!");
    return 0;
}
