// Traps three calls deep (an integer division by zero), so that the trap's backtrace must name
// the C functions: divide, compute, main.
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int divide(int a, int b) { return a / b; }

__attribute__((noinline)) int compute(int n) { return divide(100, n - 3) + 1; }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3;
    printf("%d\n", compute(n));
    return 0;
}
