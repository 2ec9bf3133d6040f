// Clocks: prints the realtime clock in seconds (the host compares it with its own), checks
// that the monotonic clock moves forward across a 20 ms sleep and that resolutions are sane.
#include <stdio.h>
#include <time.h>

#define CHECK(cond) do { if (!(cond)) { printf("FAILED line %d: %s\n", __LINE__, #cond); return 1; } } while (0)

static long long ns(struct timespec t) { return (long long)t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(void) {
    struct timespec real, res, m0, m1;
    CHECK(clock_gettime(CLOCK_REALTIME, &real) == 0);
    CHECK(clock_getres(CLOCK_MONOTONIC, &res) == 0);
    CHECK(ns(res) > 0 && ns(res) <= 1000000);
    CHECK(clock_getres(CLOCK_REALTIME, &res) == 0 && ns(res) > 0);
    CHECK(clock_gettime(CLOCK_MONOTONIC, &m0) == 0);
    struct timespec pause = {0, 20 * 1000 * 1000};
    CHECK(nanosleep(&pause, NULL) == 0);
    CHECK(clock_gettime(CLOCK_MONOTONIC, &m1) == 0);
    CHECK(ns(m1) - ns(m0) >= 20 * 1000 * 1000);
    printf("realtime %lld\n", (long long)real.tv_sec);
    return 0;
}
