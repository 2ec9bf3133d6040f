// The seed article's benchmark program: a WASI "Hello, world!".
#include <stdio.h>

int main(void) {
    printf("Hello, world!\n");
    return 0;
}
