/* Types shared by the two seed programs of the fuzzers of package symbols
 * (fuzz_test.go): what nginx's DWARF holds, in small. Both programs use
 * them, so that dwz -m moves them to a supplementary file. */
#include <stddef.h>

struct leaf_s {
    int c;
    unsigned flag:1;
    unsigned eof:1;
    unsigned timedout:1;
    char name[8];
};
typedef struct leaf_s leaf_t;

struct mid_s {
    leaf_t b[4];
    struct mid_s *next;
};

typedef struct {
    size_t len;
    unsigned char *data;
} str_t;

struct req_s {
    struct mid_s *a;
    long status;
    const char *uri;
    str_t host;
    union {
        int i;
        float f;
    } u;
    struct { int depth; } anon;
};
typedef struct req_s req_t;

static inline int leaf_sum(const leaf_t *l)
{
    return l->c + l->flag + l->eof + l->timedout;
}
