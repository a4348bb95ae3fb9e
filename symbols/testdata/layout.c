/* Struct layouts that layout_test.go compares with pahole, built with
 * -gdwarf-4 (DW_AT_bit_offset) and -gdwarf-5 (DW_AT_data_bit_offset), with
 * and without -flto. Every type is used by use_types so that it is emitted. */
#include <stdint.h>
#include <stddef.h>

typedef unsigned long my_ulong_t;
typedef struct point_s point_t;
enum color { RED, GREEN = 5, BLUE = -3 };
typedef enum color color_t;

struct point_s {
    int x, y;
};

struct bits {
    unsigned char tag;
    unsigned int after_char:5;      /* shares the int that holds tag */
    signed int sneg:7;              /* signed */
    unsigned int wide:20;           /* does not fit: next unit */
    unsigned int next_unit:30;
    unsigned long long big:40;
    unsigned long long spill:30;    /* 40 + 30 > 64: next unit */
    signed char sc:3;
    unsigned short us:12;           /* starts in one short, ends in the next */
    unsigned short us2:9;
    int :0;                         /* unnamed, forces alignment */
    unsigned int after_zero:1;
    _Bool flag:1;
    enum color ecol:4;              /* enum bitfield */
    long long sll:33;               /* signed, wider than 32 bits */
};

/* Packed: bitfields straddle storage units (negative DW_AT_bit_offset in
 * DWARF 4). */
struct __attribute__((packed)) packed_bits {
    unsigned char a:3;
    unsigned int straddle:30;
    unsigned char c;
    unsigned long long s2:50;
    short tail;
};

/* Arrays followed by a bitfield with the same DW_AT_data_member_location:
 * tag (DWARF 5 gives bitfields no byte offset, DWARF 4 the offset of the
 * storage unit, 0 for flags) and code (DWARF 4: z's int unit is at 8 too). */
struct arr_then_bits {
    char tag[3];
    unsigned int flags:5;
    unsigned int mode:11;
    char label[5];
    unsigned char small:2;
    char code[2];
    unsigned int z:4;
};

struct nested {
    int kind;
    union {
        long l;
        double d;
        struct {
            unsigned short lo:4;
            unsigned short hi:12;
            char name[6];
        };
        point_t p;
    };
    struct {
        unsigned int inner_a:3;
        unsigned int inner_b:9;
        union {
            void *ptr;
            uint32_t u32;
        };
    };
    point_t pts[3];
    char buf[17];
    color_t color;
    my_ulong_t ul;
    struct nested *next;
    const char *const *strv;
    int (*fn)(struct nested *, int);
    struct bits bits;
    int matrix[2][3];
    unsigned int tail_bits:3;
    char flex[];
};

union top_union {
    struct bits b;
    struct packed_bits pb;
    uint64_t raw[4];
    struct {
        unsigned int u_a:1;
        unsigned int u_b:31;
    };
};

struct bits g_bits;
struct packed_bits g_packed;
struct arr_then_bits g_arr;
struct nested g_nested;
union top_union g_union;

__attribute__((noipa)) int use_types(struct nested *n, struct bits *b, struct packed_bits *pb,
                                     union top_union *u, struct arr_then_bits *a)
{
    return n->kind + b->sneg + pb->straddle + u->u_b + n->lo + n->inner_b + a->mode + a->tag[1];
}

int main(void)
{
    return use_types(&g_nested, &g_bits, &g_packed, &g_union, &g_arr);
}
