/* Named crash points for the fault-torture tests.  In builds configured with
 * --enable-crash-points, POP3SYNC_CRASH_AT=NAME:N makes the process raise
 * SIGKILL the Nth time it reaches the point NAME (counting from 1), so that
 * tests can stop it inside windows that random kills rarely hit.  Points, in
 * delivery order: after-write, after-fsync, after-intent, after-rename, after-record,
 * after-dele, after-barrier-new, after-journal-fsync, after-quit.
 * Without --enable-crash-points the macro compiles to nothing. */
#ifndef P3_CRASH_H
#define P3_CRASH_H

#ifdef P3_CRASH_POINTS
void crash_point(const char *name);
#define P3_CRASH_POINT(name) crash_point(name)
#else
#define P3_CRASH_POINT(name) ((void)0)
#endif

#endif
