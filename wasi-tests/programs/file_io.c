// File I/O inside the preopened directory "sandbox": create, write, read back, seek, pread,
// pwrite, append mode, truncate, stat. Every check that fails prints what failed and exits 1;
// at the end "data.txt" holds a known content that the host verifies.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(cond) do { if (!(cond)) { printf("FAILED line %d: %s (errno %d)\n", __LINE__, #cond, errno); return 1; } } while (0)

int main(void) {
    int fd = open("sandbox/data.txt", O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, "hello world", 11) == 11);
    CHECK(lseek(fd, 0, SEEK_CUR) == 11);
    CHECK(lseek(fd, 6, SEEK_SET) == 6);
    char buf[32] = {0};
    CHECK(read(fd, buf, sizeof buf) == 5);
    CHECK(memcmp(buf, "world", 5) == 0);
    CHECK(read(fd, buf, sizeof buf) == 0); // end of file
    CHECK(pwrite(fd, "W", 1, 6) == 1);
    memset(buf, 0, sizeof buf);
    CHECK(pread(fd, buf, 5, 6) == 5);
    CHECK(memcmp(buf, "World", 5) == 0);
    CHECK(lseek(fd, 0, SEEK_CUR) == 11); // pread/pwrite leave the position alone
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    CHECK(st.st_size == 11);
    CHECK(S_ISREG(st.st_mode));
    CHECK(ftruncate(fd, 5) == 0);
    CHECK(fstat(fd, &st) == 0 && st.st_size == 5);
    CHECK(close(fd) == 0);
    CHECK(close(fd) == -1 && errno == EBADF);

    // Append mode: every write lands at the end, whatever the position.
    fd = open("sandbox/data.txt", O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    CHECK(write(fd, ", kiln", 6) == 6);
    CHECK(close(fd) == 0);

    // Reading through stdio.
    FILE *f = fopen("sandbox/data.txt", "r");
    CHECK(f != NULL);
    memset(buf, 0, sizeof buf);
    CHECK(fgets(buf, sizeof buf, f) != NULL);
    CHECK(strcmp(buf, "hello, kiln") == 0);
    fclose(f);

    // Errors are preview1 errnos mapped back by wasi-libc.
    CHECK(open("sandbox/missing.txt", O_RDONLY) == -1 && errno == ENOENT);
    CHECK(open("sandbox/data.txt", O_CREAT | O_EXCL | O_WRONLY, 0644) == -1 && errno == EEXIST);
    CHECK(stat("sandbox/data.txt", &st) == 0 && st.st_size == 11);
    puts("file_io ok");
    return 0;
}
