/* A function called in a tight loop, with a three-hop chain of structs
 * behind its argument, so that probes reading 1 or 8 fields can be
 * compared with the empty-uprobe floor. Prints nanoseconds per call. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct leaf { long f[8]; };
struct mid { long pad; struct leaf *leaf; };
struct top { long pad[2]; struct mid *mid; };
struct root { int id; struct top *top; };

__attribute__((noinline)) long target(struct root *r, long i)
{
	__asm__ volatile("" ::: "memory");
	return r->id + i;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	struct leaf leaf = {{1, 2, 3, 4, 5, 6, 7, 8}};
	struct mid mid = {0, &leaf};
	struct top top = {{0, 0}, &mid};
	struct root root = {42, &top};
	struct timespec a, b;
	long sum = 0;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		sum += target(&root, i);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("%.1f ns/call (%ld calls, sum %ld)\n", ns / n, n, sum);
	return 0;
}
