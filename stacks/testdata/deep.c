/*
 * deep.c: the fixture of package stacks' tests, built by the tests with gcc.
 *
 *   deep [DEPTH [SECONDS]]
 *
 * Every ~10 ms main calls the chain
 *
 *   main -> f1 -> f2 -> ... -> f12 -> recurse(DEPTH) -> ... -> recurse(0)
 *        -> leaf -> inlined_step (always inlined into leaf) -> target
 *
 * so a stack taken in target holds, innermost first: target, inlined_step
 * (an inlined frame of leaf), leaf, DEPTH+1 frames of recurse, f12 ... f1,
 * main, then libc's start code and _start. Every call is followed by more
 * work in its caller, so none of them is a tail call; noipa keeps gcc from
 * inlining, cloning (.isra, .constprop) or turning the recursion into a loop.
 * recurse has a local array, so a deep recursion uses real stack.
 *
 * It exits after SECONDS (default 20), or as soon as its stdin reaches end
 * of file (the test closed its end of the pipe), whichever comes first.
 */
#include <poll.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

volatile unsigned long sink;

NOIPA void target(int n)
{
	sink += (unsigned long)n;
}

static inline __attribute__((always_inline)) void inlined_step(int n)
{
	sink ^= (unsigned long)n;
	target(n + 1);
	sink ^= 1;
}

NOIPA int leaf(int n)
{
	inlined_step(n);
	return (int)(sink & 0xff);
}

NOIPA int recurse(int n)
{
	volatile char buf[64];
	int r;

	buf[0] = (char)n;
	if (n <= 0)
		r = leaf(n);
	else
		r = recurse(n - 1);
	buf[1] = (char)r;
	return r + buf[0] + buf[1];
}

#define LINK(name, next)               \
	NOIPA int name(int n)          \
	{                              \
		int r = next(n);       \
		sink += (unsigned)r;   \
		return r + 1;          \
	}

LINK(f12, recurse)
LINK(f11, f12)
LINK(f10, f11)
LINK(f9, f10)
LINK(f8, f9)
LINK(f7, f8)
LINK(f6, f7)
LINK(f5, f6)
LINK(f4, f5)
LINK(f3, f4)
LINK(f2, f3)
LINK(f1, f2)

int main(int argc, char **argv)
{
	int depth = argc > 1 ? atoi(argv[1]) : 3;
	int seconds = argc > 2 ? atoi(argv[2]) : 20;
	time_t end = time(NULL) + seconds;
	struct pollfd in = {.fd = 0, .events = POLLIN};
	char buf[64];

	while (time(NULL) < end) {
		sink += (unsigned)f1(depth);
		int k = poll(&in, 1, 10);
		if (k < 0)
			break;
		if (k > 0 && read(0, buf, sizeof buf) <= 0)
			break;
	}
	return 0;
}
