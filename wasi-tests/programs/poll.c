// poll_oneoff through poll(): a pure timeout waits at least its time; stdin (a file the host
// provides) is readable at once and its content is echoed; stdout is writable.
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond) do { if (!(cond)) { printf("FAILED line %d: %s (errno %d)\n", __LINE__, #cond, errno); return 1; } } while (0)

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(void) {
    long long start = now_ms();
    CHECK(poll(NULL, 0, 30) == 0);
    CHECK(now_ms() - start >= 30);

    struct pollfd fds[2] = {{.fd = 0, .events = POLLIN}, {.fd = 1, .events = POLLOUT}};
    CHECK(poll(fds, 2, 1000) == 2);
    CHECK(fds[0].revents & POLLIN);
    CHECK(fds[1].revents & POLLOUT);

    char buf[64];
    ssize_t n = read(0, buf, sizeof buf);
    CHECK(n > 0);
    printf("stdin: %.*s\n", (int)n, buf);

    struct pollfd bad = {.fd = 99, .events = POLLIN};
    CHECK(poll(&bad, 1, 0) == 1 && (bad.revents & (POLLNVAL | POLLERR)));
    return 0;
}
