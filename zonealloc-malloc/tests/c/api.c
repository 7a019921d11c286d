// Every export of zonealloc-malloc and the C/POSIX contracts, then the
// shapes services use: threads freeing each other's memory, destructors
// that allocate at thread exit, fork in a threaded process.
// Run under LD_PRELOAD (or linked against the static library); prints
// "all passed" and exits 0, or names the first failed check and exits 1.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static int aligned_to(void *p, size_t align) { return ((uintptr_t)p & (align - 1)) == 0; }

static void fill(unsigned char *p, size_t n, unsigned char seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 31);
}

static int filled(const unsigned char *p, size_t n, unsigned char seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 31)) return 0;
    return 1;
}

static void contracts(void) {
    // malloc: 16-byte alignment at every size, usable size at least asked.
    for (size_t n = 1; n <= (1 << 22); n = n * 3 / 2 + 1) {
        unsigned char *p = malloc(n);
        CHECK(p && aligned_to(p, 16));
        CHECK(malloc_usable_size(p) >= n);
        fill(p, n, (unsigned char)n);
        CHECK(filled(p, n, (unsigned char)n));
        free(p);
    }
    // malloc(0): a unique, freeable pointer.
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 && z2 && z1 != z2);
    free(z1);
    free(z2);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);

    // calloc: zeroed (also when the memory was used before), overflow.
    for (int round = 0; round < 2; round++) {
        unsigned char *c = calloc(1000, 100);
        CHECK(c);
        for (int i = 0; i < 100000; i++) CHECK(c[i] == 0);
        memset(c, 0xab, 100000);
        free(c);
    }
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);

    // Failure: NULL and ENOMEM.
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc((size_t)1 << 52) == NULL && errno == ENOMEM);

    // realloc: NULL is malloc, 0 frees (glibc returns NULL), contents kept.
    unsigned char *r = realloc(NULL, 100);
    CHECK(r && aligned_to(r, 16));
    fill(r, 100, 7);
    size_t sizes[] = {200, 5000, 70000, 1 << 20, 40 << 20, 3 << 20, 50, 16, 100000};
    size_t kept = 100;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        r = realloc(r, sizes[i]);
        CHECK(r && aligned_to(r, 16));
        size_t check = kept < sizes[i] ? kept : sizes[i];
        CHECK(filled(r, check, 7));
        fill(r, sizes[i], 7);
        kept = sizes[i];
        CHECK(malloc_usable_size(r) >= sizes[i]);
    }
    CHECK(realloc(r, 0) == NULL);
    errno = 0;
    void *big = malloc(64);
    CHECK(realloc(big, SIZE_MAX) == NULL && errno == ENOMEM);
    free(big); // still ours after the failed realloc

    // reallocarray: overflow is ENOMEM, the old block stays.
    int *arr = reallocarray(NULL, 10, sizeof(int));
    CHECK(arr);
    errno = 0;
    CHECK(reallocarray(arr, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    arr = reallocarray(arr, 1000, sizeof(int));
    CHECK(arr);
    free(arr);

    // posix_memalign: EINVAL unless a power of two multiple of void*.
    void *a = (void *)1;
    CHECK(posix_memalign(&a, 3, 10) == EINVAL && a == (void *)1);
    CHECK(posix_memalign(&a, 4, 10) == EINVAL);
    CHECK(posix_memalign(&a, 24, 10) == EINVAL);
    for (size_t align = sizeof(void *); align <= (4 << 20); align *= 2) {
        errno = 12345;
        CHECK(posix_memalign(&a, align, 100) == 0 && aligned_to(a, align));
        CHECK(errno == 12345);
        CHECK(malloc_usable_size(a) >= 100);
        memset(a, 1, 100);
        free(a);
    }
    // aligned_alloc, memalign, valloc, pvalloc.
    for (size_t align = 1; align <= (1 << 20); align *= 4) {
        void *p = aligned_alloc(align, 3 * align);
        CHECK(p && aligned_to(p, align));
        free(p);
        p = memalign(align, 10);
        CHECK(p && aligned_to(p, align));
        free(p);
    }
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(10);
    CHECK(v && aligned_to(v, page));
    free(v);
    v = pvalloc(10);
    CHECK(v && aligned_to(v, page) && malloc_usable_size(v) >= (size_t)page);
    free(v);

    // glibc's own names.
    void *l = __libc_malloc(100);
    CHECK(l);
    l = __libc_realloc(l, 1000);
    CHECK(l);
    __libc_free(l);
    l = __libc_calloc(10, 10);
    CHECK(l && ((char *)l)[99] == 0);
    __libc_free(l);

    // Sizes beyond the arena's largest block, and their usable size: a
    // program may use all of it (redis does), and realloc keeps all of it.
    size_t asked = (100 << 20) + 10;
    unsigned char *huge = malloc(asked);
    CHECK(huge && aligned_to(huge, 16));
    size_t usable = malloc_usable_size(huge);
    CHECK(usable >= asked);
    fill(huge, usable, 9);
    huge = realloc(huge, usable + (1 << 20));
    CHECK(huge && filled(huge, usable, 9));
    huge = realloc(huge, 200);
    CHECK(huge && filled(huge, 200, 9) && malloc_usable_size(huge) >= 200);
    free(huge);

    // memalign as glibc's: 0 and small alignments are 16, others rounded
    // up to a power of two.
    void *m = memalign(0, 10);
    CHECK(m && aligned_to(m, 16));
    free(m);
    m = memalign(24, 10);
    CHECK(m && aligned_to(m, 32));
    free(m);

    // free leaves errno alone, whatever path it takes.
    void *objects[3] = {malloc(24), malloc(1 << 20), malloc(200 << 20)};
    for (int i = 0; i < 3; i++) {
        errno = 4321;
        free(objects[i]);
        CHECK(errno == 4321);
    }
    puts("contracts ok");
}

static void bad_pointers(void) {
    // Refused with a line on stderr, never followed; nothing breaks.
    int on_stack = 42;
    free(&on_stack);
    CHECK(on_stack == 42);
    CHECK(malloc_usable_size(&on_stack) == 0);
    CHECK(realloc(&on_stack, 100) == NULL);
    char *p = malloc(64);
    strcpy(p, "still here");
    free(p + 16); // inside an object
    CHECK(strcmp(p, "still here") == 0);
    CHECK(malloc_usable_size(p + 16) == 0);
    free(p);
    free(p); // double free: refused
    char *q = malloc(64);
    char *s = malloc(64);
    CHECK(q && s && q != s);
    free(q);
    free(s);
    char *block = malloc(1 << 20);
    free(block + 4096); // inside a block
    free(block);
    free(block); // double free of a block
    puts("bad pointers ok");
}

static void introspection(void) {
    void *keep = malloc(1 << 20);
    memset(keep, 1, 1 << 20);
    struct mallinfo2 info = mallinfo2();
    CHECK(info.uordblks >= (1 << 20));
    CHECK(info.arena >= info.uordblks);
    free(keep);
    int trimmed = malloc_trim(0);
    CHECK(trimmed == 0 || trimmed == 1);
    malloc_stats();
    puts("introspection ok");
}

// Threads that free each other's memory: each hands its objects to the
// next thread through a mailbox.
#define THREADS 8
#define ROUNDS 2000
#define BATCH 64

static struct mailbox {
    pthread_mutex_t lock;
    void *slots[BATCH * 16];
    size_t sizes[BATCH * 16];
    int count;
} boxes[THREADS];

static void *exchange(void *arg) {
    int me = (int)(intptr_t)arg, next = (me + 1) % THREADS;
    unsigned seed = (unsigned)me * 7919u;
    for (int round = 0; round < ROUNDS; round++) {
        struct mailbox *out = &boxes[next];
        pthread_mutex_lock(&out->lock);
        for (int i = 0; i < BATCH && out->count < BATCH * 16; i++) {
            seed = seed * 1103515245u + 12345u;
            size_t n = 16 + seed % 2000;
            unsigned char *p = malloc(n);
            CHECK(p);
            fill(p, n, (unsigned char)n);
            out->slots[out->count] = p;
            out->sizes[out->count] = n;
            out->count++;
        }
        pthread_mutex_unlock(&out->lock);
        struct mailbox *in = &boxes[me];
        pthread_mutex_lock(&in->lock);
        for (int i = 0; i < in->count; i++) {
            CHECK(filled(in->slots[i], in->sizes[i], (unsigned char)in->sizes[i]));
            free(in->slots[i]);
        }
        in->count = 0;
        pthread_mutex_unlock(&in->lock);
    }
    return NULL;
}

static void cross_thread_frees(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_mutex_init(&boxes[i].lock, NULL);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], NULL, exchange, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        for (int j = 0; j < boxes[i].count; j++) free(boxes[i].slots[j]);
        boxes[i].count = 0;
    }
    puts("cross-thread frees ok");
}

// pthread_key destructors that allocate and free at thread exit, after
// the allocator's own thread state is gone, and set the key again so that
// they run a second round.
static pthread_key_t key;
static int destructor_rounds;
static pthread_mutex_t rounds_lock = PTHREAD_MUTEX_INITIALIZER;

static void destructor(void *value) {
    char *copy = strdup(value);
    CHECK(copy && strcmp(copy, "thread value") == 0);
    free(value);
    void *more = malloc(100000);
    CHECK(more);
    memset(more, 3, 100000);
    free(more);
    pthread_mutex_lock(&rounds_lock);
    int round = ++destructor_rounds;
    pthread_mutex_unlock(&rounds_lock);
    if (round % 2 == 1) {
        pthread_setspecific(key, copy); // one more round
    } else {
        free(copy);
    }
}

static void *with_key(void *arg) {
    (void)arg;
    pthread_setspecific(key, strdup("thread value"));
    void *p = malloc(200);
    free(p);
    return NULL;
}

static void exit_destructors(void) {
    CHECK(pthread_key_create(&key, destructor) == 0);
    for (int i = 0; i < 50; i++) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, with_key, NULL) == 0);
        pthread_join(t, NULL);
    }
    CHECK(destructor_rounds == 100);
    puts("exit destructors ok");
}

// fork while other threads allocate and free.
static volatile int stop_churn;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(intptr_t)arg;
    void *live[256] = {0};
    while (!stop_churn) {
        seed = seed * 1103515245u + 12345u;
        int slot = seed % 256;
        free(live[slot]);
        live[slot] = malloc(16 + seed % 100000);
        CHECK(live[slot]);
    }
    for (int i = 0; i < 256; i++) free(live[i]);
    return NULL;
}

static void fork_in_threads(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, churn, (void *)(intptr_t)(i + 1)) == 0);
    for (int round = 0; round < 20; round++) {
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            // The child's only thread: the allocator must work.
            for (int i = 0; i < 1000; i++) {
                char *p = malloc(16 + i * 37);
                if (!p) _exit(2);
                memset(p, 5, 16 + i * 37);
                free(p);
            }
            pthread_t c;
            if (pthread_create(&c, NULL, with_key, NULL) != 0) _exit(3);
            pthread_join(c, NULL);
            _exit(0);
        }
        int status;
        CHECK(waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop_churn = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    puts("fork in a threaded process ok");
}

// The dynamic loader and dlsym allocate through the library they load
// beside: dlopen, dlsym, a failed dlopen's dlerror (a malloc'ed message).
static void loader(void) {
    void *m = dlopen("libm.so.6", RTLD_NOW);
    CHECK(m);
    double (*cosine)(double) = (double (*)(double))dlsym(m, "cos");
    CHECK(cosine && cosine(0.0) == 1.0);
    CHECK(dlopen("libdoes-not-exist.so", RTLD_NOW) == NULL);
    const char *error = dlerror();
    CHECK(error && strstr(error, "does-not-exist"));
    CHECK(dlsym(RTLD_DEFAULT, "malloc") != NULL);
    dlclose(m);
    puts("loader ok");
}

int main(void) {
    loader();
    contracts();
    bad_pointers();
    introspection();
    cross_thread_frees();
    exit_destructors();
    fork_in_threads();
    puts("all passed");
    return 0;
}
