/* Per-server memory: what the last session learnt about the server it
 * talked to, kept next to the UID journal (JOURNAL.server) so that the next
 * session can be warm (issue 11): the CAPA seen before and after login,
 * whether pipelining worked, the greeting's shape, and a TLS session to
 * resume.
 *
 * The codec (srvmem_parse, srvmem_format) is pure: no I/O.  The store
 * (srvmem_load, srvmem_save) reads and writes the file relative to the
 * journal's directory fd with the journal's rules: O_NOFOLLOW, a regular
 * file with one link owned by the effective uid, mode 0600, replaced
 * atomically (temporary file, fsync, rename).  The caller holds the
 * journal's lock, which covers this file too.
 *
 * The TLS session holds a master secret: it is never printed, logged or
 * reported; srvmem_wipe clears it.
 *
 * The file, text, one "KEY VALUE" per line, in this order, ending "end":
 *   pop3sync-server 1
 *   server USER@HOST:PORT        whose facts these are (spec_identity)
 *   saved UNIXTIME
 *   capa-pre TOKENS              CAPA before login, normalised (may be absent);
 *                                "IMPLEMENTATION WORD" (its first word) before
 *                                "SASL MECHS", which come last
 *   capa-post TOKENS             CAPA after login (may be absent)
 *   pipelining yes|no|unknown
 *   greeting apop|plain|unknown  apop: the greeting had a timestamp
 *   early-flight yes|no|unknown  after a resumed implicit-TLS handshake the one
 *                                flight went out with the client's Finished,
 *                                before the greeting: yes, the session went
 *                                through cleanly; no, the server broke it (the
 *                                connection ended, or CAPA was refused,
 *                                before the login's +OK; a refused login is
 *                                an answer and judges nothing): never again
 *   flight-listing yes|no|unknown  [UTF8,] UIDL and LIST rode behind the login
 *                                in the one flight: yes, answered; no, the
 *                                server never answered them (Courier's login
 *                                process drops what follows PASS): never again
 *                                (nor when capa-pre says IMPLEMENTATION Courier)
 *   tls-key HEX64                what the session is valid for (tls.h:
 *   tls-expires UNIXTIME           tls_session_key); these three go
 *   tls-session HEX              together or not at all
 *   end
 * Tokens are printable ASCII 0x21-0x7e separated by single blanks.
 * Unknown keys are skipped (a newer writer); anything malformed rejects the
 * whole file (the next session is cold, nothing else). */
#ifndef P3_SRVMEM_H
#define P3_SRVMEM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SRVMEM_SERVER_MAX 700
#define SRVMEM_CAPA_MAX 512
#define SRVMEM_TLS_MAX 8192 /* a serialised session, peer certificate included */
#define SRVMEM_FILE_MAX (4 * SRVMEM_TLS_MAX)

enum srvmem_tri { SRVMEM_UNKNOWN = -1, SRVMEM_NO = 0, SRVMEM_YES = 1 };

struct srvmem {
  char server[SRVMEM_SERVER_MAX];
  time_t saved;
  char capa_pre[SRVMEM_CAPA_MAX]; /* "" when unknown */
  char capa_post[SRVMEM_CAPA_MAX];
  enum srvmem_tri pipelining;
  enum srvmem_tri greeting_apop;
  enum srvmem_tri early_flight;   /* early-flight: see the file format above */
  enum srvmem_tri flight_listing; /* flight-listing */
  int has_tls;
  uint8_t tls_key[32];
  time_t tls_expires;
  size_t tls_len;
  unsigned char tls_session[SRVMEM_TLS_MAX];
};

/* An empty memory: nothing known. */
void srvmem_init(struct srvmem *m);

/* Forgets the TLS session (wiping it). */
void srvmem_drop_tls(struct srvmem *m);

/* Clears everything, secrets included (before freeing or reusing *m). */
void srvmem_wipe(struct srvmem *m);

/* Sets a CAPA field from a token list: anything outside 0x21-0x7e becomes a
 * separator, runs of separators collapse, and the text is cut at a whole
 * token to fit.  which: 0 capa_pre, 1 capa_post. */
void srvmem_set_capa(struct srvmem *m, int which, const char *tokens);

/* Parses a whole file into *m (initialised first).  Returns 0 or -EINVAL
 * (then *m is empty again). */
int srvmem_parse(const char *buf, size_t len, struct srvmem *m);

/* Formats *m into a malloc'd buffer (*buf_r, *len_r; wipe and free it).
 * Returns 0, -EINVAL (a field that cannot be written: a server identity
 * with a blank or control character), or -ENOMEM. */
int srvmem_format(const struct srvmem *m, char **buf_r, size_t *len_r);

/* ---- the store (blocking file I/O; call it from the thread pool) */

/* Reads dir_fd/BASE.server, where base is the journal's file name, into
 * *m.  A missing or malformed file gives an empty memory and 0; one that
 * fails the checks (symlink, links, owner, group/other access) gives
 * P3_EUNSAFE with errbuf saying why (the caller goes on cold and may say
 * so).  Other errors: a negated errno. */
int srvmem_load(int dir_fd, const char *base, struct srvmem *m, char *errbuf, size_t errlen);

/* Replaces dir_fd/BASE.server with *m (BASE.server.tmp, mode 0600,
 * O_EXCL|O_NOFOLLOW, fsync, rename).  Returns 0 or a negative error with
 * errbuf set. */
int srvmem_save(int dir_fd, const char *base, const struct srvmem *m, char *errbuf, size_t errlen);

#endif
