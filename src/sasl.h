/* SASL and APOP encodings for the POP3 login: pure functions over bytes, no
 * I/O.  Base64 (RFC 4648) and MD5 come from mbedTLS; this is the only place
 * outside tls.c that includes it, and the session never does.
 *
 * Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), XOAUTH2
 * (Google's and Microsoft's definition), OAUTHBEARER (RFC 7628), and APOP
 * (RFC 1939 section 7).  POP3's AUTH command is RFC 5034.
 *
 * Every buffer these functions return that holds a secret (a password, a
 * token, or their base64) must be released with sasl_free_secret(), which
 * wipes it first; the functions wipe their own temporary copies. */
#ifndef P3_SASL_H
#define P3_SASL_H

#include <stddef.h>

/* Overwrites n bytes at p so that the compiler cannot drop it
 * (explicit_bzero).  p may be NULL when n is 0. */
void sasl_wipe(void *p, size_t n);

/* Wipes then frees a NUL-terminated secret (NULL is fine). */
void sasl_free_secret(char *p);

/* Base64 of in[0..inlen): *out_r is malloc'd and NUL-terminated, *outlen_r
 * its length (without the NUL).  An empty input gives "".  Returns 0 or
 * -ENOMEM. */
int sasl_b64_encode(const void *in, size_t inlen, char **out_r, size_t *outlen_r);

/* Decodes base64 in[0..inlen) (no line breaks, padding required as in
 * RFC 4648): *out_r is malloc'd with a NUL after the *outlen_r decoded
 * bytes.  An empty input decodes to "".  Returns 0, P3_EPROTO when the
 * input is not base64, or -ENOMEM. */
int sasl_b64_decode(const char *in, size_t inlen, char **out_r, size_t *outlen_r);

/* The base64 initial response of SASL PLAIN: "\0" authcid "\0" password
 * (an empty authzid: act as the one who logs in).  Returns 0 or -ENOMEM.
 * Free *b64_r with sasl_free_secret(). */
int sasl_plain(const char *authcid, const char *password, char **b64_r, size_t *len_r);

/* The base64 of one AUTH LOGIN answer (the user name, then the password).
 * Returns 0 or -ENOMEM.  Free *b64_r with sasl_free_secret(). */
int sasl_login_step(const char *text, char **b64_r, size_t *len_r);

/* The base64 of XOAUTH2's client response
 * "user=" user "\x01auth=Bearer " token "\x01\x01".  Returns 0, P3_EUSAGE
 * when user or token contains a control byte (0x01 would end a field), or
 * -ENOMEM.  Free *b64_r with sasl_free_secret(). */
int sasl_xoauth2(const char *user, const char *token, char **b64_r, size_t *len_r);

/* The base64 of OAUTHBEARER's client response (RFC 7628 section 3.1):
 * "n,a=" saslname(user) "," "\x01host=" host "\x01port=" port
 * "\x01auth=Bearer " token "\x01\x01", where saslname writes ',' as "=2C"
 * and '=' as "=3D"; host is left out when NULL or empty, port when 0.
 * Returns 0, P3_EUSAGE when a string contains a control byte, or -ENOMEM.
 * Free *b64_r with sasl_free_secret(). */
int sasl_oauthbearer(const char *user, const char *host, unsigned port, const char *token,
                     char **b64_r, size_t *len_r);

/* What a client answers to an OAuth failure challenge before the server
 * sends its final -ERR: XOAUTH2 an empty line, OAUTHBEARER "AQ==" (the
 * base64 of the %x01 byte, RFC 7628 section 3.2.3). */
#define SASL_XOAUTH2_ERROR_ACK ""
#define SASL_OAUTHBEARER_ERROR_ACK "AQ=="

/* The APOP timestamp of a greeting (its status text or the whole line): the
 * first "<...@...>" whose inside is printable ASCII without blanks or angle
 * brackets, at most SASL_APOP_TS_MAX octets with the brackets.  Returns 1
 * and points *ts_r (into text) and *tslen_r at it, brackets included, or 0
 * when there is none. */
#define SASL_APOP_TS_MAX 256
int sasl_apop_timestamp(const char *text, size_t len, const char **ts_r, size_t *tslen_r);

/* The APOP digest: lower-case hex MD5 of timestamp || secret, written to
 * hex_r with a NUL.  Returns 0, or P3_EUSAGE when MD5 is unavailable. */
int sasl_apop_digest(const char *ts, size_t tslen, const char *secret, char hex_r[33]);

/* Reads a server line received during an AUTH exchange (without its line
 * end).  A continuation is "+" alone or "+ " followed by base64 (possibly
 * empty; trailing blanks are ignored).  Returns 1 for a continuation, with
 * the decoded challenge malloc'd in *data_r (NUL-terminated, *datalen_r
 * bytes, possibly 0); 0 when the line is not a continuation (a status
 * line: "+OK", "-ERR", or garbage for proto_parse_status to judge); P3_EPROTO
 * for a continuation whose base64 is malformed; -ENOMEM.  *data_r is NULL
 * unless 1 is returned. */
int sasl_parse_challenge(const char *line, size_t len, char **data_r, size_t *datalen_r);

/* Describes an OAuth failure challenge (decoded JSON such as Google's
 * {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}
 * or RFC 7628's {"status":"invalid_token",...}) in buf as one printable
 * phrase: "status 401" when a "status" member is found, else the JSON with
 * control bytes replaced, cut to fit.  buf is always NUL-terminated
 * (buflen > 0). */
void sasl_oauth_error(const char *json, size_t len, char *buf, size_t buflen);

#endif
