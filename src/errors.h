/* Project-wide error codes.
 *
 * Every function that can fail returns 0 (or a non-negative count) on
 * success and a negative code on failure: either a negated errno value
 * (as libuv's UV_E* codes are) or one of the P3_E* codes below, which
 * live in a range no errno reaches.  Words are attached only at the
 * edge, by p3_strerror(); exit statuses by p3_exit_status(). */
#ifndef P3_ERRORS_H
#define P3_ERRORS_H

#include <stdarg.h>
#include <stddef.h>

/* X(name, value, sysexits status, message) */
#define P3_ERRORS(X)                                                                               \
  X(P3_ESPEC, -4001, 64, "malformed connection spec")                                              \
  X(P3_EUSAGE, -4002, 64, "bad usage")                                                             \
  X(P3_ENETRC, -4010, 78, "malformed netrc file")                                                  \
  X(P3_ENETRCPERM, -4011, 78, "netrc file is not yours, or is open to others")                     \
  X(P3_ENOPASS, -4012, 78, "no password found")                                                    \
  X(P3_EPWCMD, -4013, 78, "password command failed")                                               \
  X(P3_ECONFIG, -4014, 78, "invalid configuration")                                                \
  X(P3_EKEEP, -4015, 78, "keep mode is not possible with this server")                             \
  X(P3_ESTATE, -4016, 73, "cannot use the UID state file")                                         \
  X(P3_EUNSAFE, -4017, 78, "refusing an unsafe UID state or lock file")                            \
  X(P3_EROOTUSER, -4018, 77, "refusing to work as root in another user's Maildir")                 \
  X(P3_EDNS, -4020, 69, "host name lookup failed")                                                 \
  X(P3_ECONNECT, -4021, 69, "could not connect")                                                   \
  X(P3_ETLS, -4022, 69, "TLS handshake failed")                                                    \
  X(P3_ECERT, -4023, 69, "server certificate verification failed")                                 \
  X(P3_EPIN, -4024, 69, "server certificate does not match any pinned fingerprint")                \
  X(P3_ENOSTLS, -4025, 69, "server does not offer STLS")                                           \
  X(P3_ETLSIP, -4026, 64, "TLS to an IP address needs tcp_host!name or a pinned fingerprint")      \
  X(P3_ETLSCONF, -4027, 69, "TLS setup failed")                                                    \
  X(P3_EPROTO, -4030, 75, "garbled reply from server")                                             \
  X(P3_EDESYNC, -4031, 75, "reply does not match the command sent (desync)")                       \
  X(P3_ETIMEOUT, -4032, 75, "timed out waiting for the server")                                    \
  X(P3_EEOF, -4033, 75, "server closed the connection")                                            \
  X(P3_ESERVER, -4034, 75, "server refused the command")                                           \
  X(P3_EINUSE, -4035, 75, "mailbox is in use")                                                     \
  X(P3_ELOGINDELAY, -4036, 75, "server asks to wait before logging in again")                      \
  X(P3_ESYSTEMP, -4037, 75, "server has a temporary problem")                                      \
  X(P3_EPARTIAL, -4038, 75, "some messages could not be retrieved")                                \
  X(P3_ECANCELED, -4039, 75, "session stopped before it finished")                                 \
  X(P3_EAUTH, -4040, 77, "server refused the login")                                               \
  X(P3_EOAUTH, -4041, 77, "server refused the OAuth access token")                                 \
  X(P3_EAUTHMECH, -4042, 69, "server does not offer the login method")                             \
  X(P3_EPRIV, -4070, 71, "cannot drop privileges to the account's user")                           \
  X(P3_EWORKER, -4071, 75, "the run's worker process failed")                                      \
  X(P3_ESAVE, -4050, 73, "could not save a message to the Maildir")                                \
  X(P3_ELOCKED, -4060, 75, "another run holds the account")

enum p3_error {
#define P3_ERR_ENUM(name, value, status, msg) name = value,
  P3_ERRORS(P3_ERR_ENUM)
#undef P3_ERR_ENUM
};

/* A static sentence for err (negative); negated errno values use strerror. */
const char *p3_strerror(int err);

/* The sysexits(3) status for err: 0 for err >= 0.  Plain errno values map to
 * 73 (EX_CANTCREAT) when they come from the file system, 69 otherwise; callers
 * that know better map them themselves. */
int p3_exit_status(int err);

/* Formats one sentence into errbuf (a no-op when errbuf is NULL or errlen
 * is 0): the shared way modules hand error details to their callers. */
void p3_set_error(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* p3_set_error with a va_list, for modules that wrap it. */
void p3_vset_error(char *errbuf, size_t errlen, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* p3_set_error, then returns err: `return p3_error(errbuf, errlen, -EPERM,
 * "...", ...);' reads as one line per failure. */
int p3_error(char *errbuf, size_t errlen, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
