// Sandbox escape attempts with absolute paths: the host must refuse them (argv[1] is the host
// path of the secret file beside the sandbox), and so must wasi-libc for paths under no preopen.
#include <errno.h>
#include <fcntl.h>
#include "escape.h"

int main(int argc, char **argv) {
    const char *secret = argc > 1 ? argv[1] : "/etc/passwd";
    BLOCKED("open /etc/passwd", open_file(0, "/etc/passwd", 0));
    BLOCKED("open host path of the secret", open_file(0, secret, 0));
    BLOCKED("open / as a directory", ({
        __wasi_fd_t fd;
        __wasi_path_open(SANDBOX, 0, "/", __WASI_OFLAGS_DIRECTORY, __WASI_RIGHTS_FD_READDIR, 0, 0, &fd);
    }));
    BLOCKED("stat host path of the secret", stat_path(0, secret));
    BLOCKED("create /tmp/kiln-escape.txt", open_file(0, "/tmp/kiln-escape.txt", __WASI_OFLAGS_CREAT));
    BLOCKED("mkdir /tmp/kiln-escape-dir", __wasi_path_create_directory(SANDBOX, "/tmp/kiln-escape-dir"));
    BLOCKED("unlink host path of the secret", __wasi_path_unlink_file(SANDBOX, secret));
    BLOCKED("rename inside.txt -> /tmp/kiln-moved.txt", __wasi_path_rename(SANDBOX, "inside.txt", SANDBOX, "/tmp/kiln-moved.txt"));
    // Through wasi-libc: no preopen matches, so it fails before reaching the host.
    int fd = open(secret, O_RDONLY);
    if (fd >= 0) { printf("ESCAPED libc open\n"); escaped = 1; } else { printf("blocked libc open errno=%d\n", errno); }
    return escaped;
}
