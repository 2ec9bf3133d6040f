// Directories inside the preopen "sandbox": mkdir, readdir, rename, rmdir, unlink, stat.
// Prints the sorted listing of sandbox/tree at the end for the host to check.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(cond) do { if (!(cond)) { printf("FAILED line %d: %s (errno %d)\n", __LINE__, #cond, errno); return 1; } } while (0)

static int touch(const char *path) {
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) return -1;
    return close(fd);
}

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    CHECK(mkdir("sandbox/tree", 0755) == 0);
    CHECK(mkdir("sandbox/tree", 0755) == -1 && errno == EEXIST);
    CHECK(mkdir("sandbox/tree/sub", 0755) == 0);
    CHECK(touch("sandbox/tree/a.txt") == 0);
    CHECK(touch("sandbox/tree/b.txt") == 0);
    CHECK(touch("sandbox/tree/sub/c.txt") == 0);
    CHECK(rename("sandbox/tree/b.txt", "sandbox/tree/sub/b2.txt") == 0);
    CHECK(rmdir("sandbox/tree/sub") == -1 && errno == ENOTEMPTY);
    CHECK(unlink("sandbox/tree/sub/c.txt") == 0);
    CHECK(unlink("sandbox/tree/sub") == -1);
    CHECK(mkdir("sandbox/tree/empty", 0755) == 0);
    CHECK(rmdir("sandbox/tree/empty") == 0);
    struct stat st;
    CHECK(stat("sandbox/tree/sub", &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(stat("sandbox/tree/sub/../a.txt", &st) == 0 && S_ISREG(st.st_mode)); // `..` that stays inside

    DIR *d = opendir("sandbox/tree");
    CHECK(d != NULL);
    char *names[16];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 16) {
        char kind = e->d_type == DT_DIR ? 'd' : e->d_type == DT_REG ? 'f' : '?';
        char *line = malloc(strlen(e->d_name) + 3);
        sprintf(line, "%c %s", kind, e->d_name);
        names[n++] = line;
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp);
    for (int i = 0; i < n; i++) puts(names[i]);
    return 0;
}
