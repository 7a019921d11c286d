/* How a process ends with zonealloc as its malloc (issue 25): the
 * allocator's own thread never keeps it alive and never takes a signal
 * the program blocked. One mode per run, named by argv[1]; each prints
 * what it saw and exits 0 when it saw what glibc gives. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Allocations of every size class and a few pages, so the allocator is
 * in use on this thread (and its kswapd is running). */
static void churn(void) {
    void *p[256];
    for (int round = 0; round < 16; round++) {
        for (int i = 0; i < 256; i++) p[i] = malloc((size_t)(i * 97 % 70000) + 1);
        for (int i = 0; i < 256; i++) free(p[i]);
    }
}

static void at_exit(void) { printf("atexit ran\n"); fflush(stdout); }

/* Whether the main thread has ended (its state is Z in /proc/self/stat). */
static int leader_gone(void) {
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[2] == 'Z';
}

static void *returns_at_once(void *arg) { (void)arg; churn(); return NULL; }

static void *outlives_main(void *arg) {
    (void)arg;
    /* Bounded: at most 10 s for main to end. */
    for (int i = 0; i < 10000 && !leader_gone(); i++) {
        struct timespec ms = { 0, 1000000 };
        nanosleep(&ms, NULL);
    }
    printf("worker saw main gone: %d\n", leader_gone());
    churn();
    return NULL;
}

static void *forks(void *arg) {
    (void)arg;
    pid_t child = fork();
    if (child == 0) {
        /* The child's only thread: it ends the way main ends below. */
        churn();
        pthread_exit(NULL);
    }
    /* Bounded wait for the child: 10 s. */
    int status = -1;
    for (int i = 0; i < 10000; i++) {
        if (waitpid(child, &status, WNOHANG) == child) break;
        struct timespec ms = { 0, 1000000 };
        nanosleep(&ms, NULL);
        status = -1;
    }
    if (status == -1) {
        kill(child, SIGKILL);
        waitpid(child, &status, 0);
        printf("child hung\n");
        exit(1);
    }
    printf("child exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return NULL;
}

static volatile sig_atomic_t handled;
static void on_usr1(int sig) { (void)sig; handled++; }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    atexit(at_exit);
    churn();
    pthread_t t;
    if (!strcmp(mode, "main-exits")) {
        pthread_exit(NULL);
    } else if (!strcmp(mode, "worker-first")) {
        pthread_create(&t, NULL, returns_at_once, NULL);
        pthread_join(t, NULL);
        pthread_exit(NULL);
    } else if (!strcmp(mode, "worker-last")) {
        pthread_create(&t, NULL, outlives_main, NULL);
        pthread_exit(NULL);
    } else if (!strcmp(mode, "forked-child")) {
        pthread_create(&t, NULL, forks, NULL);
        pthread_join(t, NULL);
        return 0;
    } else if (!strcmp(mode, "blocked-signal")) {
        /* Every thread of the program blocks SIGUSR1; a process-directed
         * one stays pending for sigtimedwait, as on glibc. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGUSR1, on_usr1);
        churn();
        kill(getpid(), SIGUSR1);
        struct timespec limit = { 2, 0 };
        int got = sigtimedwait(&set, NULL, &limit);
        printf("sigtimedwait %d, handler ran %d times\n", got, (int)handled);
        return got == SIGUSR1 && handled == 0 ? 0 : 1;
    }
    printf("unknown mode %s\n", mode);
    return 2;
}
