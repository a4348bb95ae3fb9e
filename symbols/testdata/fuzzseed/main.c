/* The first seed program: see types.h. */
#include <stdio.h>
#include <stdlib.h>
#include "types.h"

leaf_t leaves[3];
static struct mid_s mids[2];

__attribute__((noinline)) int handle(req_t *r, int rc)
{
    int s = 0;
    for (struct mid_s *m = r->a; m != NULL; m = m->next)
        s += leaf_sum(&m->b[1]) + rc;
    return s + (int) r->host.len;
}

/* Never called with another first argument: GCC clones it. */
static __attribute__((noinline)) long status_of(req_t *r, int unused)
{
    return r->status + r->anon.depth;
}

long many(long a, long b, long c, long d, long e, long f, long g, req_t *h)
{
    return a + b + c + d + e + f + g + h->status;
}

int main(int argc, char **argv)
{
    req_t r = { mids, argc, argv[0], { 4, (unsigned char *) "host" }, { 1 }, { 2 } };
    mids[0].next = &mids[1];
    mids[0].b[1] = leaves[argc % 3];
    printf("%d %ld %ld\n", handle(&r, argc), status_of(&r, 0), many(1, 2, 3, 4, 5, 6, 7, &r));
    return 0;
}
