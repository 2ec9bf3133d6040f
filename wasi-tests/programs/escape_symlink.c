// Sandbox escape attempts through symlinks. The host planted, inside the sandbox:
//   abs_link -> <absolute host path of secret.txt>    rel_link -> ../secret.txt
//   chain -> sub/hop, sub/hop -> ../../secret.txt     dir_link -> ..
//   create_link -> ../created_outside.txt (dangling)
// Following any of them must fail; so must links the guest makes itself.
#include "escape.h"

int main(void) {
    const __wasi_lookupflags_t FOLLOW = __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW;
    BLOCKED("open abs_link", open_file(FOLLOW, "abs_link", 0));
    BLOCKED("open rel_link", open_file(FOLLOW, "rel_link", 0));
    BLOCKED("open chain", open_file(FOLLOW, "chain", 0));
    BLOCKED("open dir_link/secret.txt", open_file(0, "dir_link/secret.txt", 0));
    BLOCKED("open sub/hop", open_file(FOLLOW, "sub/hop", 0));
    BLOCKED("stat rel_link (follow)", stat_path(FOLLOW, "rel_link"));
    BLOCKED("stat dir_link/secret.txt", stat_path(0, "dir_link/secret.txt"));
    BLOCKED("create through create_link", open_file(FOLLOW, "create_link", __WASI_OFLAGS_CREAT));
    BLOCKED("mkdir dir_link/made", __wasi_path_create_directory(SANDBOX, "dir_link/made"));
    BLOCKED("set times through rel_link", __wasi_path_filestat_set_times(SANDBOX, FOLLOW, "rel_link", 0, 0, __WASI_FSTFLAGS_MTIM));
    // A link the guest makes that would lead out is refused when it is made (the host, not
    // only the guest, may follow it later), and so cannot be opened either.
    BLOCKED("symlink guest_link -> ../secret.txt", __wasi_path_symlink("../secret.txt", SANDBOX, "guest_link"));
    BLOCKED("open guest_link", open_file(FOLLOW, "guest_link", 0));
    BLOCKED("symlink guest_link2 -> dir_link/../../secret.txt", __wasi_path_symlink("dir_link/../../secret.txt", SANDBOX, "guest_link2"));
    // One that stays below its directory is made and followed.
    ALLOWED("symlink own_link -> inside.txt", __wasi_path_symlink("inside.txt", SANDBOX, "own_link"));
    ALLOWED("open own_link", open_file(FOLLOW, "own_link", 0));
    // Reading a link's contents is allowed: it reveals nothing the guest did not get from
    // the host's own layout.
    ALLOWED("stat abs_link (nofollow)", stat_path(0, "abs_link"));
    ALLOWED("open inside_link", open_file(FOLLOW, "inside_link", 0));
    return escaped;
}
