/* Functions that GCC -O2 turns into clones: see clones_test.go. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct conn {
    int fd;
    long number;
    char name[32];
    struct conn *next;
};

volatile int sink;
int counter;

/* IPA-SRA: only c->number is used, so the clone takes the long itself
 * instead of the pointer: isra_sum.isra.0 has no "c". */
static __attribute__((noinline)) long isra_sum(struct conn *c, long k)
{
    return c->number * k + counter;
}

/* Constant propagation: every caller passes mode == 3 and "unused" is never
 * read: constprop_mul.constprop.0 takes v only. */
static __attribute__((noinline)) long constprop_mul(long v, int unused, int mode)
{
    long r = v;
    for (int i = 0; i < mode; i++)
        r = r * 31 + i + counter;
    return r;
}

/* Partial inlining: the cheap test is inlined into callers, the rest is
 * part_work.part.0. */
static long part_work(struct conn *c)
{
    if (__builtin_expect(c == NULL, 1))
        return 0;
    long h = 0;
    for (int i = 0; i < 32 && c->name[i]; i++)
        h = h * 131 + c->name[i] + counter;
    for (struct conn *n = c->next; n != NULL; n = n->next)
        h ^= n->number * 17 + strlen(n->name);
    sink = (int) h;
    printf("%ld\n", h);
    return h;
}

/* A cold path: the unlikely block goes to hot_path.cold. */
__attribute__((cold, noinline)) void report_error(const char *what, int code)
{
    fprintf(stderr, "error %s: %d\n", what, code);
}

__attribute__((noinline)) int hot_path(struct conn *c, int n)
{
    int acc = 0;
    for (int i = 0; i < n; i++) {
        if (__builtin_expect(c[i].fd < 0, 0)) {
            report_error(c[i].name, c[i].fd);
            fprintf(stderr, "connection %ld closed\n", c[i].number);
            abort();
        }
        acc += c[i].fd;
    }
    return acc;
}

/* Inline, with its address taken: inlined into callers and also emitted
 * out of line. */
static inline int inline_twice(int a, int b)
{
    return a * 2 + b;
}

int (*inline_ptr)(int, int) = inline_twice;

/* Exported (with -rdynamic), not a clone: found via .dynsym when stripped. */
__attribute__((noinline)) int exported_entry(struct conn *c, int n)
{
    return hot_path(c, n) + inline_twice(n, 1);
}

long stack_args(long, long, long, long, long, long, long, long);

int main(int argc, char **argv)
{
    struct conn c[2];
    memset(c, 0, sizeof c);
    c[0].fd = argc;
    c[0].number = argc * 7;
    c[1].fd = 2;
    c[1].number = 9;
    if (argc > 1) {
        strncpy(c[0].name, argv[1], sizeof c[0].name - 1);
        c[0].next = &c[1];
    }
    long r = isra_sum(&c[0], argc) + isra_sum(&c[1], argc * 3 + 1);
    r += constprop_mul(r, argc, 3) + constprop_mul(argc, 0, 3);
    r += part_work(argc > 2 ? &c[0] : NULL) + part_work(argc > 3 ? &c[1] : NULL);
    r += exported_entry(c, 2) + inline_twice(argc, (int) r) + inline_ptr(1, 2);
    r += stack_args(r, argc, 3, 4, 5, 6, r * 7, argc * 8);
    sink = (int) r;
    return 0;
}

/* Eight arguments: g and h are passed on the stack. */
__attribute__((noinline)) long stack_args(long a, long b, long c, long d, long e, long f, long g, long h)
{
    return a ^ b ^ c ^ d ^ e ^ f ^ (g * h);
}
