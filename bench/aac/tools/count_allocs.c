/* LD_PRELOAD library for scripts/bench-aac: counts calls to malloc, calloc, realloc and
 * posix_memalign in a glibc program (Rust's allocator and C code alike) and prints the count on
 * stderr at exit as "allocs=N". Encoding T and 2T seconds of audio and taking the difference
 * gives the allocations per frame in steady state.
 *   cc -O2 -shared -fPIC -o count_allocs.so count_allocs.c */
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static unsigned long count;

void *malloc(size_t n) { count++; return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count++; return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count++; return __libc_realloc(p, n); }
int posix_memalign(void **p, size_t align, size_t n) {
  count++;
  *p = __libc_memalign(align, n);
  return *p ? 0 : 12; /* ENOMEM */
}

__attribute__((destructor)) static void report(void) {
  char line[48];
  int len = snprintf(line, sizeof line, "allocs=%lu\n", count);
  if (len > 0) (void)!write(2, line, (size_t)len);
}
