/* Minimal JSON: a writer into a growing buffer (daemon replies) and a small
 * DOM parser (pop3ctl reads replies).  UTF-8 passes through; control
 * characters and invalid UTF-8 bytes are escaped (\u00XX) so any server text
 * can be embedded. */
#ifndef P3_JSON_H
#define P3_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct jbuf {
  char *data; /* NUL-terminated, owned */
  size_t len, cap;
  int err;        /* -ENOMEM once an allocation failed; further appends are dropped */
  int need_comma; /* internal: a value was written at the current nesting level */
};

void jbuf_init(struct jbuf *b);
void jbuf_free(struct jbuf *b);
/* Structure: objects and arrays; keys are written with jbuf_key(). */
void jbuf_obj_begin(struct jbuf *b);
void jbuf_obj_end(struct jbuf *b);
void jbuf_arr_begin(struct jbuf *b);
void jbuf_arr_end(struct jbuf *b);
void jbuf_key(struct jbuf *b, const char *key);
/* Values. */
void jbuf_str(struct jbuf *b, const char *s); /* NULL writes null */
void jbuf_strn(struct jbuf *b, const char *s, size_t n);
void jbuf_int(struct jbuf *b, int64_t v);
void jbuf_uint(struct jbuf *b, uint64_t v);
void jbuf_bool(struct jbuf *b, int v);
void jbuf_null(struct jbuf *b);
/* An RFC 3339 UTC timestamp "2026-11-28T13:37:41Z"; t == 0 writes null. */
void jbuf_time(struct jbuf *b, time_t t);

/* Parsed values. */
enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };
struct json {
  enum json_type type;
  int boolean;
  double number;
  char *string;       /* JSON_STRING: decoded, NUL-terminated */
  struct json *items; /* JSON_ARRAY / JSON_OBJECT: count values */
  char **keys;        /* JSON_OBJECT: count keys */
  size_t count;
};

/* Parses text[0..len) (one value, surrounding white space allowed; nesting
 * at most 64 deep).  Returns 0 and *v_r (free with json_free), or -EINVAL. */
int json_parse(const char *text, size_t len, struct json **v_r);
void json_free(struct json *v);
/* Member of an object, or NULL (also when v is not an object). */
const struct json *json_get(const struct json *v, const char *key);
/* Convenience: string member or NULL; number member or dflt. */
const char *json_get_str(const struct json *v, const char *key);
double json_get_num(const struct json *v, const char *key, double dflt);

#endif
