// Prints its arguments and its whole environment, one per line, then exits with the status
// named by the EXIT_WITH variable (through proc_exit), so the host can check all three.
#include <stdio.h>
#include <stdlib.h>

extern char **environ;

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 1; i < argc; i++) {
        printf("arg[%d]=%s\n", i, argv[i]);
    }
    for (char **e = environ; *e; e++) {
        printf("env %s\n", *e);
    }
    const char *status = getenv("EXIT_WITH");
    fflush(stdout);
    exit(status ? atoi(status) : 0);
}
