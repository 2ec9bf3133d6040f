// A WAGI handler for `kiln serve` (CGI for WASI programs): the request arrives as environment
// variables and stdin, the response leaves as CGI headers, a blank line and the body on
// stdout. What it does depends on PATH_INFO, so one module covers the server's tests:
//   /hello      200 "Hello, world!"
//   /echo       the request body back, with the method and query
//   /count      a counter in memory: always 1, since every request gets a fresh instance
//   /trap       a wasm trap (500)
//   /exit       exits with status 3 (500)
//   /loop       never ends (504 at the deadline)
//   /huge       writes more than any sane response limit (502)
//   /malformed  a header line without a colon (502)
//   /missing    Status: 404
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int counter;

static const char *env(const char *name) {
    const char *value = getenv(name);
    return value ? value : "";
}

int main(void) {
    const char *path = env("PATH_INFO");
    if (strcmp(path, "/hello") == 0) {
        printf("Content-Type: text/plain\n\nHello, world!\n");
    } else if (strcmp(path, "/echo") == 0) {
        printf("Content-Type: text/plain\nX-Method: %s\n\n", env("REQUEST_METHOD"));
        printf("query=%s\n", env("QUERY_STRING"));
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
            fwrite(buf, 1, n, stdout);
        }
    } else if (strcmp(path, "/count") == 0) {
        counter += 1;
        printf("Content-Type: text/plain\n\n%d\n", counter);
    } else if (strcmp(path, "/trap") == 0) {
        __builtin_trap();
    } else if (strcmp(path, "/exit") == 0) {
        exit(3);
    } else if (strcmp(path, "/loop") == 0) {
        for (volatile int spin = 0;; spin++) {
        }
    } else if (strcmp(path, "/huge") == 0) {
        printf("Content-Type: text/plain\n\n");
        static char chunk[65536];
        memset(chunk, 'x', sizeof chunk);
        for (int i = 0; i < 1024; i++) {
            fwrite(chunk, 1, sizeof chunk, stdout);
        }
    } else if (strcmp(path, "/malformed") == 0) {
        printf("this is not a header\n\nbody\n");
    } else {
        printf("Status: 404 Not Found\nContent-Type: text/plain\n\nno such page: %s\n", path);
    }
    return 0;
}
