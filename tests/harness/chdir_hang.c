/* LD_PRELOAD shim that replays the incident in the REAL qemu-system-x86_64.
 *
 * QEMU's daemon (after -daemonize) calls chdir("/") in os_setup_post() just before
 * it writes "started" down the pipe the first process waits on. Here that chdir
 * never returns: the thread loops on timed FUTEX_WAIT_PRIVATE, as the incident's
 * daemon did in a tcmalloc spin-lock. The first process waits on the pipe, the
 * second is a zombie, the pidfile is written, the QMP socket bound.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int chdir(const char *path)
{
    static int (*real_chdir)(const char *);
    if (path && strcmp(path, "/") == 0) {
        int word = 0;
        for (;;) {
            struct timespec ts = {1, 0};
            syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
        }
    }
    if (!real_chdir)
        real_chdir = (int (*)(const char *))dlsym(RTLD_NEXT, "chdir");
    return real_chdir(path);
}
