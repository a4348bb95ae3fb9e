/* A connection and its events, laid out as nginx's, with one flag that no
 * instruction ever writes: ngxprobe watch finds no write site for it. */
#include <stdlib.h>

typedef struct ngx_event_s ngx_event_t;
typedef struct ngx_connection_s ngx_connection_t;

struct ngx_event_s {
	void *data;
	unsigned write:1;
	unsigned eof:1;
	unsigned error:1;
};

struct ngx_connection_s {
	void *data;
	ngx_event_t *read;
	ngx_event_t *write;
	unsigned long number;
	char addr_text[32];
	unsigned never_written:1;
	unsigned closed:1;
};

__attribute__((noinline)) void close_it(ngx_connection_t *c)
{
	c->closed = 1;
	c->read->eof = 1;
}

int main(int argc, char **argv)
{
	ngx_connection_t *c = calloc(1, sizeof *c);
	c->read = calloc(1, sizeof *c->read);
	c->read->data = c;
	close_it(c);
	return c->never_written + argc;
}
