// Sandbox escape attempts with `..`: every path that climbs out of the preopen must fail, in
// every path_* function; a `..` that stays inside still works.
#include "escape.h"

int main(void) {
    BLOCKED("open ../secret.txt", open_file(0, "../secret.txt", 0));
    BLOCKED("open sub/../../secret.txt", open_file(0, "sub/../../secret.txt", 0));
    BLOCKED("open ./../secret.txt", open_file(0, "./../secret.txt", 0));
    BLOCKED("open .. as a directory", ({
        __wasi_fd_t fd;
        __wasi_path_open(SANDBOX, 0, "..", __WASI_OFLAGS_DIRECTORY, __WASI_RIGHTS_FD_READDIR, 0, 0, &fd);
    }));
    BLOCKED("create ../created.txt", open_file(0, "../created.txt", __WASI_OFLAGS_CREAT));
    BLOCKED("stat ../secret.txt", stat_path(0, "../secret.txt"));
    BLOCKED("mkdir ../made_by_guest", __wasi_path_create_directory(SANDBOX, "../made_by_guest"));
    BLOCKED("rename inside.txt -> ../moved.txt", __wasi_path_rename(SANDBOX, "inside.txt", SANDBOX, "../moved.txt"));
    BLOCKED("rename ../secret.txt -> stolen.txt", __wasi_path_rename(SANDBOX, "../secret.txt", SANDBOX, "stolen.txt"));
    BLOCKED("link ../secret.txt -> hard.txt", __wasi_path_link(SANDBOX, 0, "../secret.txt", SANDBOX, "hard.txt"));
    BLOCKED("link inside.txt -> ../linked.txt", __wasi_path_link(SANDBOX, 0, "inside.txt", SANDBOX, "../linked.txt"));
    BLOCKED("unlink ../secret.txt", __wasi_path_unlink_file(SANDBOX, "../secret.txt"));
    BLOCKED("rmdir ../outside_dir", __wasi_path_remove_directory(SANDBOX, "../outside_dir"));
    BLOCKED("set times ../secret.txt", __wasi_path_filestat_set_times(SANDBOX, 0, "../secret.txt", 0, 0, __WASI_FSTFLAGS_MTIM));
    ALLOWED("open sub/../inside.txt", open_file(0, "sub/../inside.txt", 0));
    return escaped;
}
