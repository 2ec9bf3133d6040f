// Shared by the escape_* programs: raw preview1 calls on the preopened directory (fd 3, the
// host's "sandbox"), so that the host, not wasi-libc's path lookup, is what must refuse.
// BLOCKED(call) prints "blocked NAME errno=N" when the call fails and "ESCAPED NAME" (and
// remembers it) when it succeeds; the program exits 1 if anything escaped.
#include <stdio.h>
#include <string.h>
#include <wasi/api.h>

static int escaped = 0;

#define BLOCKED(name, call) do { \
    __wasi_errno_t e_ = (call); \
    if (e_ == 0) { printf("ESCAPED %s\n", name); escaped = 1; } \
    else { printf("blocked %s errno=%d\n", name, (int)e_); } \
} while (0)

#define ALLOWED(name, call) do { \
    __wasi_errno_t e_ = (call); \
    if (e_ != 0) { printf("WRONGLY REFUSED %s errno=%d\n", name, (int)e_); escaped = 1; } \
    else { printf("allowed %s\n", name); } \
} while (0)

static const __wasi_fd_t SANDBOX = 3;
static const __wasi_rights_t READ = __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_FILESTAT_GET;

static __wasi_errno_t open_file(__wasi_lookupflags_t follow, const char *path, __wasi_oflags_t oflags) {
    __wasi_fd_t fd;
    __wasi_errno_t e = __wasi_path_open(SANDBOX, follow, path, oflags, READ | __WASI_RIGHTS_FD_WRITE, 0, 0, &fd);
    if (e == 0) {
        // Prove the descriptor is real: read what it points at.
        char buf[64] = {0};
        __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf - 1};
        __wasi_size_t n = 0;
        (void)__wasi_fd_read(fd, &iov, 1, &n);
        printf("  read through it: %s\n", buf);
        (void)__wasi_fd_close(fd);
    }
    return e;
}

static __wasi_errno_t stat_path(__wasi_lookupflags_t follow, const char *path) {
    __wasi_filestat_t st;
    return __wasi_path_filestat_get(SANDBOX, follow, path, &st);
}
