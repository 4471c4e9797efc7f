#include "config.h"

#include "maildir.h"

#include "check.h"
#include "errors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define GUARD_MS 20000

static uv_loop_t loop;
static uv_timer_t guard;
static bool timed_out;
static char root[256];

struct result {
  int calls;
  int err;
  char name[300];
  uint64_t bytes;
};

static void done_cb(struct maildir_delivery *d, int err, const char *new_name, uint64_t bytes,
                    void *data) {
  struct result *r = data;

  (void)d;
  r->calls++;
  r->err = err;
  r->bytes = bytes;
  snprintf(r->name, sizeof(r->name), "%s", new_name != NULL ? new_name : "");
}

static void guard_cb(uv_timer_t *t) {
  (void)t;
  timed_out = true;
  uv_stop(&loop);
}

/* Runs the loop until nothing is pending; the unreferenced guard timer
 * only fires if something hangs. */
static void run_loop(void) {
  timed_out = false;
  uv_timer_start(&guard, guard_cb, GUARD_MS, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_timer_stop(&guard);
  CHECK(!timed_out);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void rm_rf(const char *path) {
  nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void mkpath(char *buf, size_t len, const char *rel) {
  snprintf(buf, len, "%s/%s", root, rel);
}

/* Entries in dir other than . and .. (-1 if it cannot be read); the first
 * one's name goes to first (if not NULL). */
static int count_entries(const char *dir, char *first, size_t firstlen) {
  DIR *dp = opendir(dir);
  struct dirent *de;
  int n = 0;

  if (dp == NULL)
    return -1;
  while ((de = readdir(dp)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    if (n == 0 && first != NULL)
      snprintf(first, firstlen, "%s", de->d_name);
    n++;
  }
  closedir(dp);
  return n;
}

static int count_in(struct maildir *md, const char *sub) {
  char dir[512];

  snprintf(dir, sizeof(dir), "%s/%s", md->path, sub);
  return count_entries(dir, NULL, 0);
}

static char *slurp(const char *path, size_t *len_r) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long len;

  *len_r = 0;
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  len = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)len + 1);
  if (buf != NULL && fread(buf, 1, (size_t)len, f) != (size_t)len) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf != NULL)
    *len_r = (size_t)len;
  return buf;
}

static int mode_of(const char *path) {
  struct stat st;

  if (lstat(path, &st) != 0)
    return -1;
  return (int)(st.st_mode & 07777);
}

/* Checks that new/NAME holds exactly want[0..wantlen) with mode 0600 and
 * that NAME ends in ",S=<wantlen>". */
static void check_delivered(struct maildir *md, const struct result *r, const char *want,
                            size_t wantlen) {
  char path[1024], suffix[64];
  size_t len, slen;
  char *got;

  CHECK_INT(r->calls, 1);
  CHECK_INT(r->err, 0);
  CHECK_INT(r->bytes, wantlen);
  snprintf(suffix, sizeof(suffix), ",S=%zu", wantlen);
  slen = strlen(suffix);
  CHECK(strlen(r->name) > slen && strcmp(r->name + strlen(r->name) - slen, suffix) == 0);
  snprintf(path, sizeof(path), "%s/new/%s", md->path, r->name);
  got = slurp(path, &len);
  CHECK(got != NULL);
  if (got != NULL)
    CHECK_MEM(got, len, want, wantlen);
  free(got);
  CHECK_INT(mode_of(path), 0600);
}

/* ---- init */

static void test_init(void) {
  static const char *const dirs[] = {
      "a", "a/b", "a/b/Maildir", "a/b/Maildir/tmp", "a/b/Maildir/new", "a/b/Maildir/cur"};
  struct maildir md;
  char path[512], sub[512], errbuf[512];
  size_t i;
  int err;
  FILE *f;

  mkpath(path, sizeof(path), "a/b/Maildir/");
  err = maildir_init(&md, &loop, path, errbuf, sizeof(errbuf));
  CHECK_INT(err, 0);
  for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
    mkpath(sub, sizeof(sub), dirs[i]);
    CHECK_INT(mode_of(sub), 0700);
  }
  mkpath(sub, sizeof(sub), "a/b/Maildir");
  CHECK_STR(md.path, sub); /* trailing slash gone */
  CHECK(md.hostname[0] != '\0');
  CHECK(strchr(md.hostname, '/') == NULL && strchr(md.hostname, ':') == NULL);
  CHECK(md.loop == &loop);
  CHECK_INT(md.queued_bytes, 0);
  CHECK_INT(md.active, 0);
  maildir_deinit(&md);

  /* Again on the existing tree. */
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  maildir_deinit(&md);

  /* A path component that is a file. */
  mkpath(sub, sizeof(sub), "file");
  f = fopen(sub, "w");
  CHECK(f != NULL);
  if (f != NULL)
    fclose(f);
  mkpath(path, sizeof(path), "file/Maildir");
  err = maildir_init(&md, &loop, path, errbuf, sizeof(errbuf));
  CHECK_INT(err, UV_ENOTDIR);
  CHECK(strstr(errbuf, "/file: Not a directory") != NULL);
  CHECK(md.path == NULL);

  /* tmp/ that is a file: the message names tmp/. */
  mkpath(path, sizeof(path), "badtmp");
  CHECK_INT(mkdir(path, 0700), 0);
  mkpath(sub, sizeof(sub), "badtmp/tmp");
  f = fopen(sub, "w");
  if (f != NULL)
    fclose(f);
  err = maildir_init(&md, &loop, path, errbuf, sizeof(errbuf));
  CHECK_INT(err, UV_ENOTDIR);
  CHECK(strstr(errbuf, sub) != NULL);
  CHECK(strstr(errbuf, "Not a directory") != NULL);
  mkpath(sub, sizeof(sub), "badtmp/new");
  CHECK_INT(mode_of(sub), -1); /* stopped at the first bad one */

  /* tmp/ a dangling symlink: refused as a symlink, never created through. */
  mkpath(path, sizeof(path), "dangling");
  CHECK_INT(mkdir(path, 0700), 0);
  mkpath(sub, sizeof(sub), "dangling/tmp");
  CHECK_INT(symlink("/nonexistent/pop3sync-test", sub), 0);
  err = maildir_init(&md, &loop, path, errbuf, sizeof(errbuf));
  CHECK_INT(err, UV_ELOOP);
  CHECK(strstr(errbuf, sub) != NULL);
  CHECK(strstr(errbuf, "is a symbolic link; refusing to follow it") != NULL);

  err = maildir_init(&md, &loop, "", errbuf, sizeof(errbuf));
  CHECK_INT(err, UV_EINVAL);
}

/* Host names with '/' and ':' are escaped; needs a UTS namespace (root),
 * so it runs in a child and is skipped where unshare is refused. */
static void test_hostname(void) {
  pid_t pid = fork();
  int status;

  CHECK(pid >= 0);
  if (pid == 0) {
    struct maildir md;
    char path[512], errbuf[256], name[256];
    static const char host[] = "ho/st:x.example";
    const char *dot;

    check_failures = 0; /* count only the child's own */
    if (unshare(CLONE_NEWUTS) != 0 || sethostname(host, strlen(host)) != 0)
      _exit(77);
    mkpath(path, sizeof(path), "hostname");
    if (maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)) != 0)
      _exit(2);
    CHECK_STR(md.hostname, "ho\\057st\\072x.example");
    CHECK_INT(maildir_unique_name(&md, name, sizeof(name)), 0);
    dot = strchr(name, '.');
    dot = dot != NULL ? strchr(dot + 1, '.') : NULL;
    CHECK(dot != NULL);
    if (dot != NULL)
      CHECK_STR(dot + 1, "ho\\057st\\072x.example");
    maildir_deinit(&md);
    _exit(check_failures ? 1 : 0);
  }
  CHECK_INT(waitpid(pid, &status, 0), pid);
  CHECK(WIFEXITED(status));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
    fprintf(stderr, "test_maildir: hostname escaping skipped (no UTS namespace)\n");
  else
    CHECK_INT(WEXITSTATUS(status), 0);
}

/* path + "/" + rel in a static buffer (one at a time). */
static const char *path_with(const char *path, const char *rel) {
  static char buf[PATH_MAX];

  if ((size_t)snprintf(buf, sizeof(buf), "%s/%s", path, rel) >= sizeof(buf))
    abort();
  return buf;
}

static int open_fds(void) {
  return count_entries("/proc/self/fd", NULL, 0);
}

/* A symlinked tmp/, new/ or cur/ (to a decoy directory holding a file):
 * init refuses it by name, creates nothing in the decoy and leaves no fd
 * open.  A symlinked Maildir itself is the user's choice and works. */
static void test_symlinked_subdirs(void) {
  static const char *const subs[] = {"tmp", "new", "cur"};
  struct maildir md;
  char path[512], decoy[512], sub[600], want[700], errbuf[512];
  size_t i, len;
  int fds, err;
  char *got;
  FILE *f;

  mkpath(decoy, sizeof(decoy), "decoy");
  CHECK_INT(mkdir(decoy, 0755), 0);
  f = fopen(path_with(decoy, "precious"), "w");
  CHECK(f != NULL);
  if (f != NULL) {
    fputs("precious\n", f);
    fclose(f);
  }
  fds = open_fds();
  for (i = 0; i < 3; i++) {
    char rel[64];

    snprintf(rel, sizeof(rel), "symlinked-%s", subs[i]);
    mkpath(path, sizeof(path), rel);
    CHECK_INT(mkdir(path, 0700), 0);
    snprintf(sub, sizeof(sub), "%s/%s", path, subs[i]);
    CHECK_INT(symlink(decoy, sub), 0);
    err = maildir_init(&md, &loop, path, errbuf, sizeof(errbuf));
    CHECK_INT(err, UV_ELOOP);
    snprintf(want, sizeof(want), "%s is a symbolic link; refusing to follow it", sub);
    CHECK_STR(errbuf, want);
    CHECK(md.path == NULL);
    CHECK_INT(open_fds(), fds);
    CHECK_INT(count_entries(decoy, NULL, 0), 1);
    CHECK_INT(mode_of(decoy), 0755);
    got = slurp(path_with(decoy, "precious"), &len);
    CHECK(got != NULL);
    if (got != NULL)
      CHECK_MEM(got, len, "precious\n", 9);
    free(got);
  }

  /* The Maildir itself a symlink (to another disk, say): followed. */
  mkpath(path, sizeof(path), "real-maildir");
  CHECK_INT(mkdir(path, 0700), 0);
  mkpath(sub, sizeof(sub), "link-maildir");
  CHECK_INT(symlink(path, sub), 0);
  CHECK_INT(maildir_init(&md, &loop, sub, errbuf, sizeof(errbuf)), 0);
  CHECK_INT(mode_of(path_with(path, "new")), 0700);
  CHECK(maildir_dirfd(&md, MAILDIR_TMP) >= 0 && maildir_dirfd(&md, MAILDIR_NEW) >= 0 &&
        maildir_dirfd(&md, MAILDIR_CUR) >= 0);
  maildir_deinit(&md);
  CHECK_INT(open_fds(), fds);
}

/* ---- tmp/ hygiene */

static void make_file(const char *dir, const char *name, time_t mtime) {
  char path[1024];
  struct timespec ts[2];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  f = fopen(path, "w");
  CHECK(f != NULL);
  if (f == NULL)
    return;
  fputs("x\n", f);
  fclose(f);
  ts[0].tv_sec = ts[1].tv_sec = mtime;
  ts[0].tv_nsec = ts[1].tv_nsec = 0;
  CHECK_INT(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static int removed_count;
static void on_removed(void *arg, const char *name) {
  (void)arg;
  (void)name;
  removed_count++;
}

static void test_clean_tmp(void) {
  enum { N_KEEP = 12 };
  struct maildir md;
  char path[512], tmp[600], name[N_KEEP + 8][300], outside[600], errbuf[256];
  const char *host;
  time_t now = time(NULL), old = now - 40 * 3600, fresh = now - 60;
  long pid, dead, me = (long)getpid();
  int status, i, k = 0;
  pid_t child;

  /* A pid that surely no longer exists: a child we have reaped. */
  child = fork();
  if (child == 0)
    _exit(0);
  CHECK(child > 0);
  CHECK_INT(waitpid(child, &status, 0), child);
  dead = (long)child;

  mkpath(path, sizeof(path), "clean");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  snprintf(tmp, sizeof(tmp), "%s/tmp", path);

  /* Exactly our scheme, parsed. */
  CHECK_INT(maildir_parse_name("1700000000.M5P42Q7.host.example", &pid, &host), 1);
  CHECK_INT(pid, 42);
  CHECK_STR(host, "host.example");
  {
    char ours[256];
    CHECK_INT(maildir_unique_name(&md, ours, sizeof(ours)), 0);
    CHECK_INT(maildir_parse_name(ours, &pid, &host), 1);
    CHECK_INT(pid, me);
    CHECK_STR(host, md.hostname);
  }

  /* Removed: ours and old (any host); ours, fresh, by a dead pid here. */
  snprintf(name[k++], 300, "%lld.M1P%ldQ1.%s", (long long)old, me, md.hostname);
  make_file(tmp, name[k - 1], old);
  snprintf(name[k++], 300, "%lld.M2P%ldQ2.elsewhere.example", (long long)old, dead);
  make_file(tmp, name[k - 1], old);
  snprintf(name[k++], 300, "%lld.M3P%ldQ3.%s", (long long)fresh, dead, md.hostname);
  make_file(tmp, name[k - 1], fresh);
  k = 0;

  /* Kept: foreign names (old), ours but fresh and alive or elsewhere. */
  {
    static const char *const foreign[] = {
        "1600000000.M1P2.host",         /* no Q: another MDA's */
        "courier-12345.tmp",            /* no scheme at all */
        "1600000000.M1P2Q3.host:2,S",   /* an info part */
        "1600000000.M1P2Q3.host,S=5",   /* a final name */
        "x1600000000.M1P2Q3.host",      /* a prefix */
        "1600000000.M1234567P2Q3.host", /* 7 digits of usec */
        "1600000000.M1P0Q3.host",       /* pid 0 */
        "1600000000.M1P2Q3.",           /* no host */
        "1600000000.MP2Q3.host",        /* no usec */
        ".1600000000.M1P2Q3.host",      /* hidden */
    };
    for (i = 0; i < (int)(sizeof(foreign) / sizeof(foreign[0])); i++) {
      snprintf(name[3 + i], 300, "%s", foreign[i]);
      make_file(tmp, foreign[i], old);
    }
    k = 3 + i;
  }
  snprintf(name[k++], 300, "%lld.M4P%ldQ4.%s", (long long)fresh, me, md.hostname);
  make_file(tmp, name[k - 1], fresh);
  snprintf(name[k++], 300, "%lld.M5P%ldQ5.elsewhere.example", (long long)fresh, dead);
  make_file(tmp, name[k - 1], fresh);
  /* Our name, old, but a symlink (to a file outside) or a directory. */
  mkpath(outside, sizeof(outside), "clean-outside");
  make_file(root, "clean-outside", old);
  snprintf(name[k++], 300, "%lld.M6P%ldQ6.%s", (long long)old, dead, md.hostname);
  CHECK_INT(symlink(outside, path_with(tmp, name[k - 1])), 0);
  snprintf(name[k++], 300, "%lld.M7P%ldQ7.%s", (long long)old, dead, md.hostname);
  CHECK_INT(mkdir(path_with(tmp, name[k - 1]), 0700), 0);

  removed_count = 0;
  CHECK_INT(maildir_clean_tmp(&md, now, 36 * 3600, on_removed, NULL), 3);
  CHECK_INT(removed_count, 3);
  for (i = 0; i < 3; i++)
    CHECK(access(path_with(tmp, name[i]), F_OK) != 0);
  for (i = 3; i < k; i++) {
    struct stat st;
    if (lstat(path_with(tmp, name[i]), &st) != 0) {
      fprintf(stderr, "clean_tmp removed %s\n", name[i]);
      CHECK(0);
    }
  }
  CHECK_INT(count_in(&md, "tmp"), k - 3);
  CHECK_INT(access(outside, F_OK), 0);
  /* Again: nothing more to do (the dup'd directory stream is rewound). */
  CHECK_INT(maildir_clean_tmp(&md, now, 36 * 3600, NULL, NULL), 0);
  maildir_deinit(&md);
}

/* ---- root and a user's Maildir */

static void test_check_owner(void) {
  char path[512], sub[600], errbuf[PATH_MAX + 256], want[PATH_MAX + 300];
  const char *who;
  struct passwd *pw;

  mkpath(path, sizeof(path), "owner-root");
  CHECK_INT(mkdir(path, 0700), 0);
  CHECK_INT(maildir_check_owner(path, errbuf, sizeof(errbuf)), 0);
  if (geteuid() != 0) {
    fprintf(stderr, "test_maildir: maildir_check_owner refusals skipped (not root)\n");
    return;
  }
  pw = getpwuid(65534);
  who = pw != NULL ? pw->pw_name : "uid 65534";
  mkpath(path, sizeof(path), "owner-nobody");
  CHECK_INT(mkdir(path, 0700), 0);
  CHECK_INT(chown(path, 65534, 65534), 0);
  CHECK_INT(maildir_check_owner(path, errbuf, sizeof(errbuf)), P3_EROOTUSER);
  snprintf(want, sizeof(want), "%s belongs to %s; run pop3 as %s", path, who, who);
  CHECK_STR(errbuf, want);
  CHECK_INT(p3_exit_status(P3_EROOTUSER), 77);
  /* Missing: the nearest existing parent decides. */
  snprintf(sub, sizeof(sub), "%s/a/Maildir", path);
  CHECK_INT(maildir_check_owner(sub, errbuf, sizeof(errbuf)), P3_EROOTUSER);
  CHECK(strstr(errbuf, path) != NULL && strstr(errbuf, "run pop3 as") != NULL);
  /* Root's own directory inside a user's: the user could swap it. */
  snprintf(sub, sizeof(sub), "%s/rootsub", path);
  CHECK_INT(mkdir(sub, 0700), 0);
  CHECK_INT(maildir_check_owner(sub, errbuf, sizeof(errbuf)), P3_EROOTUSER);
  /* A user's symlink to a root-owned directory. */
  mkpath(sub, sizeof(sub), "owner-link");
  CHECK_INT(symlink(path_with(root, "owner-root"), sub), 0);
  CHECK_INT(lchown(sub, 65534, 65534), 0);
  CHECK_INT(maildir_check_owner(sub, errbuf, sizeof(errbuf)), P3_EROOTUSER);
}

/* ---- unique names */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Parses "SECONDS.M<usec>P<pid>Q<counter>.<host>"; returns 0 if it fits. */
static int parse_unique(const char *s, const char *host, unsigned long *q_r) {
  char *end;
  long sec, usec, pid;
  unsigned long q;

  sec = strtol(s, &end, 10);
  if (end == s || sec < 1000000000L || strncmp(end, ".M", 2) != 0)
    return -1;
  s = end + 2;
  usec = strtol(s, &end, 10);
  if (end == s || usec < 0 || usec > 999999 || *end != 'P')
    return -1;
  s = end + 1;
  pid = strtol(s, &end, 10);
  if (end == s || pid != (long)getpid() || *end != 'Q')
    return -1;
  s = end + 1;
  q = strtoul(s, &end, 10);
  if (end == s || *end != '.')
    return -1;
  if (strcmp(end + 1, host) != 0)
    return -1;
  *q_r = q;
  return 0;
}

static void test_unique(void) {
  enum { N = 1000 };
  struct maildir md;
  char path[512], errbuf[256], small[8];
  char **names = calloc(N, sizeof(*names));
  unsigned long q, prev_q = 0;
  int i, bad = 0, dups = 0;

  mkpath(path, sizeof(path), "unique");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  CHECK(names != NULL);
  if (names == NULL)
    return;
  for (i = 0; i < N; i++) {
    names[i] = malloc(256);
    CHECK_INT(maildir_unique_name(&md, names[i], 256), 0);
    if (parse_unique(names[i], md.hostname, &q) != 0) {
      if (bad++ == 0)
        fprintf(stderr, "bad unique name: %s\n", names[i]);
    } else {
      if (i > 0 && q != prev_q + 1)
        bad++;
      CHECK_INT(md.counter, q);
      prev_q = q;
    }
  }
  CHECK_INT(bad, 0);
  qsort(names, N, sizeof(*names), cmp_str);
  for (i = 1; i < N; i++)
    if (strcmp(names[i - 1], names[i]) == 0)
      dups++;
  CHECK_INT(dups, 0);
  for (i = 0; i < N; i++)
    free(names[i]);
  free(names);
  CHECK_INT(maildir_unique_name(&md, small, sizeof(small)), UV_ENOBUFS);
  maildir_deinit(&md);
}

/* ---- deliveries */

/* Write system calls made by this process so far (-1 if unknown). */
static long write_syscalls(void) {
  FILE *f = fopen("/proc/self/io", "r");
  char line[128];
  long n = -1;

  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "syscw: %ld", &n) == 1)
      break;
  fclose(f);
  return n;
}

static void fill(char *buf, size_t len, unsigned seed) {
  size_t i;

  for (i = 0; i < len; i++) {
    seed = seed * 1103515245u + 12345u;
    buf[i] = (char)(seed >> 16);
  }
}

static void test_big_delivery(void) {
  enum { BIG = 3 * 1024 * 1024 };
  struct maildir md;
  struct maildir_delivery *d;
  struct result r = {0};
  char path[512], errbuf[256];
  size_t total = 0, len, i;
  char *want = malloc(2 * BIG);
  size_t bigs[] = {BIG, 64 * 1024, 64 * 1024 + 1, 100000};
  size_t peak = 0;

  CHECK(want != NULL);
  if (want == NULL)
    return;
  fill(want, 2 * BIG, 7);
  mkpath(path, sizeof(path), "big");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
  CHECK_INT(md.active, 1);
  /* Small pieces with the big ones in between, all before the open is done. */
  for (i = 0; i < 5000; i++) {
    len = 1 + i % 97;
    if (i % 1250 == 0) {
      len = bigs[i / 1250];
    }
    CHECK_INT(maildir_write(d, want + total, len), 0);
    total += len;
    if (md.queued_bytes > peak)
      peak = md.queued_bytes;
  }
  CHECK_INT(peak, total);
  CHECK(total <= 2 * BIG);
  maildir_commit(d);
  CHECK_INT(maildir_write(d, "x", 1), UV_EINVAL); /* after commit */
  run_loop();
  check_delivered(&md, &r, want, total);
  CHECK_INT(count_in(&md, "tmp"), 0);
  CHECK_INT(count_in(&md, "new"), 1);
  CHECK_INT(md.queued_bytes, 0);
  CHECK_INT(md.active, 0);
  free(want);
  maildir_deinit(&md);
}

/* Many tiny writes while the loop runs: they must be gathered, not one
 * system call each. */
struct trickle {
  struct maildir_delivery *d;
  char *want;
  size_t total;
  int ticks;
  size_t max_queued;
  struct maildir *md;
};

static void trickle_cb(uv_timer_t *t) {
  struct trickle *tr = t->data;
  int i;

  for (i = 0; i < 2000; i++) {
    size_t len = 1 + (size_t)(i % 13);
    CHECK_INT(maildir_write(tr->d, tr->want + tr->total, len), 0);
    tr->total += len;
  }
  if (tr->md->queued_bytes > tr->max_queued)
    tr->max_queued = tr->md->queued_bytes;
  if (++tr->ticks == 5) {
    maildir_commit(tr->d);
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
  }
}

/* mem_bytes counts what the queue allocated (chunk capacity and delivery
 * structs), so that the engine's high-water mark bounds memory; the LIST
 * size hint makes a small message one chunk of its size. */
static void test_memory(void) {
  struct maildir md;
  struct maildir_delivery *d, *d2;
  struct result r = {0}, r2 = {0};
  char path[512], errbuf[256];
  char *want = malloc(200000);
  size_t base, i;

  CHECK(want != NULL);
  if (want == NULL)
    return;
  fill(want, 200000, 11);
  mkpath(path, sizeof(path), "memory");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  CHECK_INT(md.mem_bytes, 0);

  /* A 4,200-byte message with its LIST size: one chunk of that size. */
  CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
  base = md.mem_bytes;
  CHECK(base >= 512); /* the delivery itself counts */
  maildir_size_hint(d, 4300);
  for (i = 0; i < 4200; i += 100)
    CHECK_INT(maildir_write(d, want + i, 100), 0);
  CHECK_INT(md.queued_bytes, 4200);
  CHECK(md.mem_bytes - base >= 4300 && md.mem_bytes - base <= 4300 + 64);
  /* Without a hint: 4 KiB, then 8 KiB for the last 104 bytes. */
  {
    size_t before = md.mem_bytes;

    CHECK_INT(maildir_open(&md, done_cb, &r2, &d2), 0);
    CHECK_INT(md.mem_bytes - before, base);
    before = md.mem_bytes;
    for (i = 0; i < 4200; i += 100)
      CHECK_INT(maildir_write(d2, want + i, 100), 0);
    CHECK(md.mem_bytes - before >= 4096 + 8192);
  }
  maildir_commit(d);
  maildir_commit(d2);
  run_loop();
  check_delivered(&md, &r, want, 4200);
  check_delivered(&md, &r2, want, 4200);
  CHECK_INT(md.mem_bytes, 0);
  CHECK_INT(md.queued_bytes, 0);

  /* A large hint starts with 64 KiB chunks: 150,000 bytes take three. */
  r.calls = 0;
  CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
  base = md.mem_bytes;
  maildir_size_hint(d, 5u << 20);
  for (i = 0; i < 150000; i += 1000)
    CHECK_INT(maildir_write(d, want + i, 1000), 0);
  CHECK(md.mem_bytes - base >= 3 * 65536 && md.mem_bytes - base <= 3 * (65536 + 64));
  maildir_size_hint(d, 100); /* too late: ignored */
  maildir_commit(d);
  run_loop();
  check_delivered(&md, &r, want, 150000);
  CHECK_INT(md.mem_bytes, 0);
  /* Freed 64 KiB chunks are kept for the next message, within a bound. */
  CHECK(md.spare_count > 0 && md.spare_count * 65536 <= MAILDIR_SPARE_MAX);
  r.calls = 0;
  CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
  maildir_size_hint(d, 70000);
  {
    unsigned spares = md.spare_count;

    CHECK_INT(maildir_write(d, want, 1000), 0);
    CHECK_INT(md.spare_count, spares - 1); /* one reused */
    CHECK_INT(maildir_write(d, want + 1000, 69000), 0);
  }
  maildir_commit(d);
  run_loop();
  check_delivered(&md, &r, want, 70000);
  CHECK_INT(md.mem_bytes, 0);
  CHECK_INT(md.active, 0);
  free(want);
  maildir_deinit(&md);
  CHECK(md.spare == NULL && md.spare_count == 0);
}

static void test_trickle(void) {
  struct maildir md;
  struct result r = {0};
  struct trickle tr = {0};
  uv_timer_t timer;
  char path[512], errbuf[256];
  long before, after;
  size_t expect;
  int i;

  tr.want = malloc(100000);
  fill(tr.want, 100000, 3);
  tr.md = &md;
  mkpath(path, sizeof(path), "trickle");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  CHECK_INT(maildir_open(&md, done_cb, &r, &tr.d), 0);
  run_loop(); /* the open is done: each tick's first write goes out at once */
  CHECK_INT(count_in(&md, "tmp"), 1);
  uv_timer_init(&loop, &timer);
  timer.data = &tr;
  uv_timer_start(&timer, trickle_cb, 1, 1);
  before = write_syscalls();
  run_loop();
  after = write_syscalls();
  check_delivered(&md, &r, tr.want, tr.total);
  for (i = 0, expect = 0; i < 2000; i++)
    expect += 5 * (1 + (size_t)(i % 13));
  CHECK_INT(tr.total, expect);
  CHECK(tr.max_queued > 0);
  if (before >= 0 && after >= 0) {
    /* 10000 maildir_write calls; about 20 here, but libuv wake-ups and
     * valgrind's own locking count as writes too. */
    if (after - before > 1000)
      fprintf(stderr, "test_maildir: %ld write syscalls for 10000 small writes\n", after - before);
    CHECK(after - before <= 1000);
  }
  CHECK_INT(count_in(&md, "tmp"), 0);
  CHECK_INT(md.queued_bytes, 0);
  CHECK_INT(md.active, 0);
  free(tr.want);
  maildir_deinit(&md);
}

static void test_zero(void) {
  struct maildir md;
  struct maildir_delivery *d;
  struct result r = {0};
  char path[512], errbuf[256];

  mkpath(path, sizeof(path), "zero");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
  CHECK_INT(maildir_write(d, "", 0), 0);
  maildir_commit(d);
  CHECK_INT(r.calls, 0); /* never from inside maildir_commit */
  run_loop();
  check_delivered(&md, &r, "", 0);
  CHECK_INT(count_in(&md, "tmp"), 0);
  CHECK_INT(md.active, 0);
  maildir_deinit(&md);
}

static void test_abort(void) {
  struct maildir md;
  struct maildir_delivery *d;
  struct result r1 = {0}, r2 = {0};
  char path[512], errbuf[256];
  static char big[200000];

  mkpath(path, sizeof(path), "abort");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);

  /* Before the open has finished. */
  CHECK_INT(maildir_open(&md, done_cb, &r1, &d), 0);
  CHECK_INT(maildir_write(d, big, sizeof(big)), 0);
  maildir_abort(d);
  maildir_abort(d);  /* ignored */
  maildir_commit(d); /* ignored */
  CHECK_INT(r1.calls, 0);
  run_loop();
  CHECK_INT(r1.calls, 1);
  CHECK_INT(r1.err, UV_ECANCELED);
  CHECK_INT(count_in(&md, "tmp"), 0);
  CHECK_INT(count_in(&md, "new"), 0);
  CHECK_INT(md.queued_bytes, 0);

  /* After data has reached the tmp file. */
  CHECK_INT(maildir_open(&md, done_cb, &r2, &d), 0);
  CHECK_INT(maildir_write(d, big, sizeof(big)), 0);
  run_loop();
  CHECK_INT(r2.calls, 0);
  CHECK_INT(count_in(&md, "tmp"), 1);
  CHECK_INT(md.queued_bytes, 0);
  CHECK_INT(maildir_delivery_error(d), 0);
  maildir_abort(d);
  run_loop();
  CHECK_INT(r2.calls, 1);
  CHECK_INT(r2.err, UV_ECANCELED);
  CHECK_INT(count_in(&md, "tmp"), 0);
  CHECK_INT(count_in(&md, "new"), 0);
  CHECK_INT(md.active, 0);
  maildir_deinit(&md);
}

/* tmp/ replaced after init: by a file, by a symlink to a decoy directory.
 * The tmp/ fd still names the removed directory: the open fails (ENOENT)
 * and nothing is ever created through the replacement. */
static void test_open_failure(void) {
  size_t k;

  for (k = 0; k < 2; k++) {
    struct maildir md;
    struct maildir_delivery *d, *d2;
    struct result r = {0}, r2 = {0};
    char path[512], tmp[600], decoy[512], errbuf[256];
    FILE *f;

    mkpath(path, sizeof(path), k == 0 ? "openfail-file" : "openfail-link");
    mkpath(decoy, sizeof(decoy), k == 0 ? "openfail-decoy0" : "openfail-decoy1");
    CHECK_INT(mkdir(decoy, 0700), 0);
    CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
    snprintf(tmp, sizeof(tmp), "%s/tmp", path);
    CHECK_INT(rmdir(tmp), 0);
    if (k == 0) {
      f = fopen(tmp, "w");
      CHECK(f != NULL);
      if (f != NULL)
        fclose(f);
    } else {
      CHECK_INT(symlink(decoy, tmp), 0);
    }
    CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
    CHECK_INT(maildir_write(d, "Subject: x\r\n\r\nbody\r\n", 20), 0);
    maildir_commit(d);
    /* Another one that sees the error before it is committed. */
    CHECK_INT(maildir_open(&md, done_cb, &r2, &d2), 0);
    run_loop();
    CHECK_INT(maildir_delivery_error(d2), UV_ENOENT);
    CHECK_INT(maildir_write(d2, "dropped", 7), 0);
    CHECK_INT(md.queued_bytes, 0);
    maildir_commit(d2);
    run_loop();
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.err, UV_ENOENT);
    CHECK_STR(r.name, "");
    CHECK_INT(r2.calls, 1);
    CHECK_INT(r2.err, UV_ENOENT);
    CHECK_INT(count_in(&md, "new"), 0);
    CHECK_INT(count_entries(decoy, NULL, 0), 0);
    CHECK_INT(md.queued_bytes, 0);
    CHECK_INT(md.active, 0);
    maildir_deinit(&md);
  }
}

/* A write that fails half way (EFBIG from RLIMIT_FSIZE, which binds root
 * too): the first write comes back short, the next one fails; the tmp file
 * goes and nothing reaches new/. */
static void test_write_failure(void) {
  enum { LIMIT = 1024 * 1024, BIG = 3 * 1024 * 1024 };
  struct maildir md;
  struct maildir_delivery *d, *ok;
  struct result r = {0}, rok = {0};
  struct rlimit old, lim;
  char path[512], errbuf[256];
  char *buf = malloc(BIG);

  CHECK(buf != NULL);
  if (buf == NULL)
    return;
  fill(buf, BIG, 11);
  mkpath(path, sizeof(path), "writefail");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  CHECK_INT(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = LIMIT;
  signal(SIGXFSZ, SIG_IGN);
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);

  CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
  CHECK_INT(maildir_write(d, buf, BIG), 0);
  /* A small one alongside must not be hurt. */
  CHECK_INT(maildir_open(&md, done_cb, &rok, &ok), 0);
  CHECK_INT(maildir_write(ok, buf, 1000), 0);
  maildir_commit(ok);
  run_loop();
  CHECK_INT(maildir_delivery_error(d), UV_EFBIG);
  CHECK_INT(md.queued_bytes, 0);
  CHECK_INT(maildir_write(d, buf, 100), 0); /* dropped */
  CHECK_INT(md.queued_bytes, 0);
  maildir_commit(d);
  run_loop();
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, SIG_DFL);

  CHECK_INT(r.calls, 1);
  CHECK_INT(r.err, UV_EFBIG);
  CHECK_INT(r.bytes, LIMIT); /* the short write was taken, then the rest failed */
  check_delivered(&md, &rok, buf, 1000);
  CHECK_INT(count_in(&md, "tmp"), 0);
  CHECK_INT(count_in(&md, "new"), 1);
  CHECK_INT(md.queued_bytes, 0);
  CHECK_INT(md.active, 0);
  free(buf);
  maildir_deinit(&md);
}

/* The rename fails: new/ gone (ENOENT), or a file of the same name already
 * there (EEXIST: it must not be replaced).  The tmp file goes either way. */
static void test_commit_failure(void) {
  struct maildir md;
  struct maildir_delivery *d;
  struct result r = {0}, r2 = {0};
  char path[512], sub[1024], tmpname[300], errbuf[256];
  char *got;
  size_t len;
  FILE *f;

  mkpath(path, sizeof(path), "commitfail");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);

  /* A name clash in new/. */
  CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
  CHECK_INT(maildir_write(d, "fresh", 5), 0);
  run_loop();
  snprintf(sub, sizeof(sub), "%s/tmp", path);
  CHECK_INT(count_entries(sub, tmpname, sizeof(tmpname)), 1);
  snprintf(sub, sizeof(sub), "%s/new/%s,S=5", path, tmpname);
  f = fopen(sub, "w");
  CHECK(f != NULL);
  if (f != NULL) {
    fputs("older", f);
    fclose(f);
  }
  maildir_commit(d);
  run_loop();
  CHECK_INT(r.calls, 1);
  CHECK_INT(r.err, UV_EEXIST);
  got = slurp(sub, &len);
  CHECK(got != NULL);
  if (got != NULL)
    CHECK_MEM(got, len, "older", 5);
  free(got);
  CHECK_INT(unlink(sub), 0);
  CHECK_INT(count_in(&md, "tmp"), 0);

  /* new/ gone. */
  CHECK_INT(maildir_open(&md, done_cb, &r2, &d), 0);
  CHECK_INT(maildir_write(d, "fresh", 5), 0);
  run_loop();
  snprintf(sub, sizeof(sub), "%s/new", path);
  CHECK_INT(rmdir(sub), 0);
  maildir_commit(d);
  run_loop();
  CHECK_INT(r2.calls, 1);
  CHECK_INT(r2.err, UV_ENOENT);
  CHECK_INT(count_in(&md, "tmp"), 0);
  CHECK_INT(md.queued_bytes, 0);
  CHECK_INT(md.active, 0);
  maildir_deinit(&md);

  /* new/ swapped for a symlink to a decoy after init: the rename goes to
   * the new/ opened by init (gone: ENOENT), never into the decoy. */
  {
    struct result r3 = {0};
    char decoy[512];

    mkpath(path, sizeof(path), "commitswap");
    mkpath(decoy, sizeof(decoy), "commitswap-decoy");
    CHECK_INT(mkdir(decoy, 0700), 0);
    CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
    CHECK_INT(maildir_open(&md, done_cb, &r3, &d), 0);
    CHECK_INT(maildir_write(d, "fresh", 5), 0);
    run_loop();
    snprintf(sub, sizeof(sub), "%s/new", path);
    CHECK_INT(rmdir(sub), 0);
    CHECK_INT(symlink(decoy, sub), 0);
    maildir_commit(d);
    run_loop();
    CHECK_INT(r3.calls, 1);
    CHECK_INT(r3.err, UV_ENOENT);
    CHECK_INT(count_entries(decoy, NULL, 0), 0);
    CHECK_INT(count_in(&md, "tmp"), 0);
    maildir_deinit(&md);
  }
}

struct barrier_result {
  int calls;
  int err;
};

static void barrier_cb(int err, void *data) {
  struct barrier_result *b = data;

  b->calls++;
  b->err = err;
}

static void test_barrier(void) {
  struct maildir md;
  struct maildir_delivery *d;
  struct result r = {0};
  struct barrier_result b1 = {0, 1}, b2 = {0, 1};
  char path[512], sub[1024], errbuf[256];

  mkpath(path, sizeof(path), "barrier");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  CHECK_INT(maildir_open(&md, done_cb, &r, &d), 0);
  CHECK_INT(maildir_write(d, "hello\n", 6), 0);
  maildir_commit(d);
  run_loop();
  check_delivered(&md, &r, "hello\n", 6);
  CHECK_INT(maildir_barrier(&md, barrier_cb, &b1), 0);
  CHECK_INT(md.active, 1);
  run_loop();
  CHECK_INT(b1.calls, 1);
  CHECK_INT(b1.err, 0);
  CHECK_INT(md.active, 0);

  /* new/ swapped for a symlink after init: the barrier fsyncs the new/
   * that init opened (no path is looked up again), so it still works. */
  snprintf(sub, sizeof(sub), "%s/new", path);
  CHECK_INT(rename(sub, path_with(path, "new.moved")), 0);
  CHECK_INT(symlink("/nonexistent/pop3sync-test", sub), 0);
  CHECK_INT(maildir_barrier(&md, barrier_cb, &b2), 0);
  run_loop();
  CHECK_INT(b2.calls, 1);
  CHECK_INT(b2.err, 0);
  CHECK_INT(md.active, 0);
  maildir_deinit(&md);
}

/* Three deliveries fed in turns across loop iterations, committed in
 * reverse order. */
struct interleave {
  struct maildir *md;
  struct maildir_delivery *d[3];
  struct result r[3];
  char *want[3];
  size_t len[3];
  int tick;
};

static void interleave_cb(uv_timer_t *t) {
  struct interleave *iv = t->data;
  int k = iv->tick % 3;
  size_t n = 1 + (size_t)(iv->tick * 7919) % 40000;
  int i;

  if (iv->tick < 60) {
    CHECK_INT(maildir_write(iv->d[k], iv->want[k] + iv->len[k], n), 0);
    iv->len[k] += n;
  } else {
    for (i = 2; i >= 0; i--)
      maildir_commit(iv->d[i]);
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
  }
  iv->tick++;
}

static void test_interleaved(void) {
  struct maildir md;
  struct interleave iv;
  uv_timer_t timer;
  char path[512], errbuf[256];
  int k;

  memset(&iv, 0, sizeof(iv));
  iv.md = &md;
  mkpath(path, sizeof(path), "interleaved");
  CHECK_INT(maildir_init(&md, &loop, path, errbuf, sizeof(errbuf)), 0);
  for (k = 0; k < 3; k++) {
    iv.want[k] = malloc(20 * 40000);
    fill(iv.want[k], 20 * 40000, 100 + (unsigned)k);
    CHECK_INT(maildir_open(&md, done_cb, &iv.r[k], &iv.d[k]), 0);
  }
  CHECK_INT(md.active, 3);
  uv_timer_init(&loop, &timer);
  timer.data = &iv;
  uv_timer_start(&timer, interleave_cb, 0, 1);
  run_loop();
  for (k = 0; k < 3; k++) {
    check_delivered(&md, &iv.r[k], iv.want[k], iv.len[k]);
    free(iv.want[k]);
  }
  CHECK(strcmp(iv.r[0].name, iv.r[1].name) != 0 && strcmp(iv.r[1].name, iv.r[2].name) != 0);
  CHECK_INT(count_in(&md, "new"), 3);
  CHECK_INT(count_in(&md, "tmp"), 0);
  CHECK_INT(count_in(&md, "cur"), 0);
  CHECK_INT(md.queued_bytes, 0);
  CHECK_INT(md.active, 0);
  maildir_deinit(&md);
}

int main(void) {
  const char *tmpdir = getenv("TMPDIR");

  umask(022);
  snprintf(root, sizeof(root), "%s/test_maildir.XXXXXX",
           tmpdir != NULL && *tmpdir != '\0' ? tmpdir : "/tmp");
  if (mkdtemp(root) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  CHECK_INT(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &guard);
  uv_unref((uv_handle_t *)&guard);

  test_init();
  test_hostname();
  test_unique();
  test_big_delivery();
  test_trickle();
  test_memory();
  test_zero();
  test_abort();
  test_open_failure();
  test_write_failure();
  test_commit_failure();
  test_barrier();
  test_symlinked_subdirs();
  test_clean_tmp();
  test_check_owner();
  test_interleaved();

  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  rm_rf(root);
  return check_result("test_maildir");
}
