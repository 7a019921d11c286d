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
// batches      producer/consumer at scale (the shape of mimalloc-bench's
//              xmalloc-test): 2 producer threads allocate batches of 4096
//              64-byte objects and hand them through a bounded queue of
//              100 batches to 2 consumer threads that free them; 1200
//              batches in all
// rounds       a server simulation (the shape of larson): 2 threads, each
//              with an array of 5000 objects of 8..1000 bytes, replace
//              random slots; every round each thread hands its array to a
//              newly started thread and exits, so most objects are freed by
//              a thread other than the one that allocated them; 60 rounds
//              of 50000 replacements per thread
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

// batches
#define BATCH_OBJECTS 4096
#define BATCH_QUEUE 100
#define BATCHES 1200
#define BATCH_WORKERS 2

struct batch {
    struct batch *next;
    void *objects[BATCH_OBJECTS];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    struct batch *head;
    int queued, produced, consumed;
} bq = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0};

static void *batch_producer(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&bq.lock);
        int mine = bq.produced < BATCHES;
        bq.produced += mine;
        pthread_mutex_unlock(&bq.lock);
        if (!mine) return NULL;
        struct batch *b = malloc(sizeof *b);
        for (int i = 0; i < BATCH_OBJECTS; i++) {
            b->objects[i] = malloc(64);
            memset(b->objects[i], i, 64);
        }
        pthread_mutex_lock(&bq.lock);
        while (bq.queued >= BATCH_QUEUE) pthread_cond_wait(&bq.not_full, &bq.lock);
        b->next = bq.head;
        bq.head = b;
        bq.queued++;
        pthread_cond_signal(&bq.not_empty);
        pthread_mutex_unlock(&bq.lock);
    }
}

static void *batch_consumer(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&bq.lock);
        while (bq.head == NULL && bq.consumed < BATCHES) pthread_cond_wait(&bq.not_empty, &bq.lock);
        if (bq.consumed >= BATCHES) {
            pthread_cond_broadcast(&bq.not_empty);
            pthread_mutex_unlock(&bq.lock);
            return NULL;
        }
        struct batch *b = bq.head;
        bq.head = b->next;
        bq.queued--;
        if (++bq.consumed >= BATCHES) pthread_cond_broadcast(&bq.not_empty);
        pthread_cond_signal(&bq.not_full);
        pthread_mutex_unlock(&bq.lock);
        for (int i = 0; i < BATCH_OBJECTS; i++) free(b->objects[i]);
        free(b);
    }
}

// rounds
#define ROUND_THREADS 2
#define ROUND_SLOTS 5000
#define ROUND_OPS 50000
#define ROUNDS 60

struct lineage {
    void **slots;
    uint32_t seed;
    int round;
};

static void *round_thread(void *arg) {
    struct lineage *l = arg;
    for (int i = 0; i < ROUND_OPS; i++) {
        uint32_t r = next(&l->seed);
        int victim = r % ROUND_SLOTS;
        free(l->slots[victim]);
        size_t n = 8 + (r >> 13) % 993;
        char *p = malloc(n);
        p[0] = (char)n;
        l->slots[victim] = p;
    }
    // The next round's thread takes the array over, and this one ends.
    if (++l->round < ROUNDS) {
        pthread_t t;
        pthread_create(&t, NULL, round_thread, l);
        pthread_detach(t);
    } else {
        for (int i = 0; i < ROUND_SLOTS; i++) free(l->slots[i]);
        free(l->slots);
        __atomic_store_n(&l->slots, NULL, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void threads(int n, void *(*f)(void *)) {
    pthread_t t[16];
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, f, (void *)(intptr_t)i);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: server handoff|prodcons|batches|rounds|mixed|falseshare|pair64|baseline\n");
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
    } else if (!strcmp(w, "batches")) {
        pthread_t t[2 * BATCH_WORKERS];
        for (int i = 0; i < BATCH_WORKERS; i++) {
            pthread_create(&t[2 * i], NULL, batch_consumer, NULL);
            pthread_create(&t[2 * i + 1], NULL, batch_producer, NULL);
        }
        for (int i = 0; i < 2 * BATCH_WORKERS; i++) pthread_join(t[i], NULL);
    } else if (!strcmp(w, "rounds")) {
        static struct lineage lineages[ROUND_THREADS];
        for (int i = 0; i < ROUND_THREADS; i++) {
            lineages[i].seed = 4141u + i;
            lineages[i].slots = malloc(ROUND_SLOTS * sizeof(void *));
            for (int j = 0; j < ROUND_SLOTS; j++) lineages[i].slots[j] = malloc(8 + next(&lineages[i].seed) % 993);
            pthread_t t;
            pthread_create(&t, NULL, round_thread, &lineages[i]);
            pthread_detach(t);
        }
        // Wait for the last round of every lineage (each thread is
        // detached, so the wait is on the array it leaves behind).
        for (int i = 0; i < ROUND_THREADS; i++)
            while (__atomic_load_n(&lineages[i].slots, __ATOMIC_ACQUIRE) != NULL) sched_yield();
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
