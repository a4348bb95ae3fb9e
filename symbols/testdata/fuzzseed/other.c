/* The second seed program, for the dwz pair: see types.h. */
#include <stdio.h>
#include "types.h"

__attribute__((noinline)) int walk(req_t *r)
{
    int s = 0;
    for (struct mid_s *m = r->a; m != NULL; m = m->next)
        s += leaf_sum(&m->b[0]);
    return s;
}

int main(int argc, char **argv)
{
    struct mid_s m = { 0 };
    req_t r = { &m, argc, argv[0], { 0, NULL }, { 0 }, { 0 } };
    printf("%d\n", walk(&r));
    return 0;
}
