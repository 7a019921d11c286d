// Allocation patterns of servers, in C, for any malloc put in front with
// LD_PRELOAD (.ci/c-bench runs it under each). One workload per run:
//
//   server WORKLOAD
//
// handoff      8 threads; each allocates small requests (16..512 bytes) and
//              hands them to the next thread, which frees them (a server
//              passing requests between worker threads)
// prodcons     one producer thread allocates 64..4096-byte buffers, one
//              consumer frees them, through a bounded ring that the
//              consumer drains by half whenever it is full (so the live
//              set is the same under every allocator, whichever thread is
//              faster)
// mixed        4 threads; a long-lived set of 20k objects replaced slowly,
//              and short-lived temporaries allocated and freed at once
// falseshare   4 threads each allocate many 8..64-byte counters and update
//              them in a tight loop (objects of different threads should
//              not share cache lines)
// pair64       one thread, malloc(64)/free pairs (the unsized free path)
// baseline     one malloc(64)/free pair: the peak RSS every run starts
//              from (the allocator's code and its first metadata)
//
// Prints the elapsed seconds and the peak RSS in KiB.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline uint32_t next(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

// handoff: lock-free single-producer single-consumer rings between
// neighbouring threads.
#define HANDOFF_THREADS 8
#define RING 1024
#define HANDOFF_OPS 400000

struct ring {
    _Atomic size_t head, tail;
    void *slots[RING];
    char pad[64];
};

static struct ring rings[HANDOFF_THREADS];

static void *handoff(void *arg) {
    int me = (int)(intptr_t)arg;
    struct ring *out = &rings[(me + 1) % HANDOFF_THREADS], *in = &rings[me];
    uint32_t seed = 2463534242u + me;
    size_t sent = 0, received = 0;
    while (sent < HANDOFF_OPS || received < HANDOFF_OPS) {
        int progress = 0;
        if (sent < HANDOFF_OPS) {
            size_t h = atomic_load_explicit(&out->head, memory_order_relaxed);
            if (h - atomic_load_explicit(&out->tail, memory_order_acquire) < RING) {
                size_t n = 16 + next(&seed) % 497;
                char *p = malloc(n);
                p[0] = (char)n;
                out->slots[h % RING] = p;
                atomic_store_explicit(&out->head, h + 1, memory_order_release);
                sent++;
                progress = 1;
            }
        }
        size_t t = atomic_load_explicit(&in->tail, memory_order_relaxed);
        while (t != atomic_load_explicit(&in->head, memory_order_acquire)) {
            free(in->slots[t % RING]);
            atomic_store_explicit(&in->tail, ++t, memory_order_release);
            received++;
            progress = 1;
        }
        // 2 cores, 8 threads: let the neighbour run rather than spin.
        if (!progress) sched_yield();
    }
    return NULL;
}

// prodcons
#define PC_OPS 2000000
static struct ring pc;

static void *producer(void *arg) {
    (void)arg;
    uint32_t seed = 88172645u;
    for (size_t i = 0; i < PC_OPS; i++) {
        size_t h = atomic_load_explicit(&pc.head, memory_order_relaxed);
        while (h - atomic_load_explicit(&pc.tail, memory_order_acquire) >= RING) sched_yield();
        size_t n = 64 + next(&seed) % 4033;
        char *p = malloc(n);
        memset(p, 1, 16);
        pc.slots[h % RING] = p;
        atomic_store_explicit(&pc.head, h + 1, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    size_t t = 0;
    while (t < PC_OPS) {
        size_t h;
        while ((h = atomic_load_explicit(&pc.head, memory_order_acquire)) - t < RING && h < PC_OPS) sched_yield();
        size_t end = h < PC_OPS ? t + RING / 2 : h;
        for (; t < end; t++) {
            free(pc.slots[t % RING]);
            atomic_store_explicit(&pc.tail, t + 1, memory_order_release);
        }
    }
    return NULL;
}

// mixed
#define MIXED_THREADS 4
#define LONG_LIVED 20000
#define MIXED_OPS 3000000

// A long-lived object of 32..2031 bytes, written as a service writes what
// it keeps.
static void *keep(uint32_t r) {
    size_t n = 32 + r % 2000;
    void *p = malloc(n);
    memset(p, 1, n);
    return p;
}

static void *mixed(void *arg) {
    uint32_t seed = 521288629u + (uint32_t)(intptr_t)arg;
    void **live = calloc(LONG_LIVED, sizeof(void *));
    for (int i = 0; i < LONG_LIVED; i++) live[i] = keep(next(&seed));
    for (int i = 0; i < MIXED_OPS; i++) {
        uint32_t r = next(&seed);
        if (r % 16 == 0) {
            int slot = (r >> 4) % LONG_LIVED;
            free(live[slot]);
            live[slot] = keep(r >> 8);
        } else {
            char *t = malloc(8 + (r >> 8) % 256);
            t[0] = 1;
            free(t);
        }
    }
    for (int i = 0; i < LONG_LIVED; i++) free(live[i]);
    free(live);
    return NULL;
}

// falseshare
#define FS_THREADS 4
#define FS_OBJECTS 64
#define FS_ROUNDS 200000

static void *falseshare(void *arg) {
    uint32_t seed = 1234567u + (uint32_t)(intptr_t)arg;
    volatile uint64_t *objects[FS_OBJECTS];
    for (int i = 0; i < FS_OBJECTS; i++) {
        objects[i] = malloc(8 + next(&seed) % 57);
        *objects[i] = 0;
    }
    for (int r = 0; r < FS_ROUNDS; r++)
        for (int i = 0; i < FS_OBJECTS; i++) (*objects[i])++;
    for (int i = 0; i < FS_OBJECTS; i++) free((void *)objects[i]);
    return NULL;
}

static void threads(int n, void *(*f)(void *)) {
    pthread_t t[16];
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, f, (void *)(intptr_t)i);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: server handoff|prodcons|mixed|falseshare|pair64|baseline\n");
        return 2;
    }
    const char *w = argv[1];
    double start = now();
    if (!strcmp(w, "handoff")) {
        threads(HANDOFF_THREADS, handoff);
    } else if (!strcmp(w, "prodcons")) {
        pthread_t p, c;
        pthread_create(&p, NULL, producer, NULL);
        pthread_create(&c, NULL, consumer, NULL);
        pthread_join(p, NULL);
        pthread_join(c, NULL);
    } else if (!strcmp(w, "mixed")) {
        threads(MIXED_THREADS, mixed);
    } else if (!strcmp(w, "falseshare")) {
        threads(FS_THREADS, falseshare);
    } else if (!strcmp(w, "baseline")) {
        void *volatile p = malloc(64);
        free(p);
    } else if (!strcmp(w, "pair64")) {
        for (int i = 0; i < 20000000; i++) {
            void *volatile p = malloc(64);
            free(p);
        }
    } else {
        fprintf(stderr, "unknown workload %s\n", w);
        return 2;
    }
    double elapsed = now() - start;
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    printf("%.4f %ld\n", elapsed, u.ru_maxrss);
    return 0;
}
