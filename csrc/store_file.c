/*
 * store_file.c: the file driver. One file per key under a directory, for
 * data that must outlive the process or be shared by the processes of one
 * machine (OpenResty workers, cron scripts).
 *
 * Layout: PATH/ab/cd/abcd<28 more hex digits>, the XXH3-128 of the full key,
 * so that no key byte can reach the file system. Each file holds, integers
 * little-endian:
 *
 *   offset  size  field
 *   0       6     magic "cachy\0"
 *   6       1     format version (1)
 *   7       1     flags (0)
 *   8       8     expiry: absolute wall-clock milliseconds, 0 = never
 *   16      4     key length K
 *   20      8     payload length P
 *   28      K     the full key: a hash collision or a foreign file is a miss
 *   28+K    P     the payload
 *   28+K+P  8     XXH3-64 of every byte before it: torn or damaged files
 *
 * An entry file is at most MAX_ENTRY bytes (512 MB): put refuses larger
 * ones (too_big), and a reader decides from the header alone, before
 * reading past the first FIRST_READ bytes, whether the file is one: a file
 * longer than MAX_ENTRY or whose size differs from what its header declares
 * is damaged (a miss, removed), however large or sparse it is.
 *
 * Symbolic links: PATH itself may be one (the user's choice; it is resolved
 * when the store opens), but nothing below it is ever followed. Every
 * directory and file under PATH is opened without following a link: in one
 * openat2(RESOLVE_NO_SYMLINKS) where the kernel has it (Linux 5.6), else
 * component by component with O_NOFOLLOW. A symbolic link found where a
 * directory or an entry of the scheme should be is not the store's: readers
 * treat it as a miss, writers replace it (unlinking the link itself, never
 * its target) by a directory or an entry, and prune and flush without a
 * prefix remove it. Nothing outside PATH is read, written or removed.
 *
 * Concurrency: every writer (put, add, incr, forget, the removal of a stale
 * file, flush, prune) holds flock() on the key's bucket directory PATH/ab/cd,
 * so read-modify-write is atomic across processes. A writer writes
 * <name>.tmp and rename()s it over <name>: readers take no lock and see the
 * old file or the new one, never a mix. A <name>.tmp that exists while the
 * bucket lock is held was left by a writer that died; the next write of
 * that key replaces it, and prune and flush remove it.
 *
 * The locks are flock(), so PATH must be on a local file system (the store
 * is shared by the processes of one machine, not across NFS).
 *
 * Files are not fsync()ed: after a power failure an entry may be missing or
 * fail its checksum, and either reads as a miss.
 *
 * Expired entries are removed when read; prune() (cache:store("file"):prune(),
 * for a cron job) removes every expired or damaged entry and the temp files
 * of writers that died. flush() and prune() touch only names of the scheme
 * above (and, for entries, only files that start with the magic), so foreign
 * files under PATH stay.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include <xxhash.h>

#include "store.h"

#define MAGIC "cachy\0"
#define MAGIC_LEN 6
#define FORMAT_VERSION 1
#define HEADER_LEN 28
#define TRAILER_LEN 8
#define HEX_LEN 32
#define TMP_SUFFIX ".tmp"
#define TMP_SUFFIX_LEN 4
/* "/ab/cd/" + name + ".tmp" + NUL */
#define PATH_TAIL (7 + HEX_LEN + TMP_SUFFIX_LEN + 1)
/* Bound on retries when concurrent flushes keep removing a bucket. */
#define LOCK_ATTEMPTS 100
/* Bytes read before asking a file's size: most entries fit. */
#define FIRST_READ 4096
/* The largest entry file, header and trailer included, written or read. */
#define MAX_ENTRY ((uint64_t)512 << 20)

#if defined(__linux__) && defined(SYS_openat2) && !defined(CACHY_FILE_NO_OPENAT2)
#define HAVE_OPENAT2 1
/* struct open_how and RESOLVE_NO_SYMLINKS of <linux/openat2.h>, which
 * older kernel headers lack. */
struct file_open_how {
    uint64_t flags, mode, resolve;
};
#define FILE_RESOLVE_NO_SYMLINKS 0x04
#endif

typedef struct file_store {
    char *root;          /* absolute path of the directory */
    size_t rootlen;
    mode_t fmode;        /* files: 0600 or `permissions` */
    mode_t dmode;        /* directories: fmode plus x where r is set */
    char *path;          /* scratch: root + PATH_TAIL */
    cachy_buf io;        /* scratch: file contents read or written under a lock */
    int no_openat2;      /* the kernel (or a seccomp filter) refused openat2 */
} file_store;

/* What a file at a key's name turned out to be. */
enum { ABSENT, LIVE, STALE /* expired, damaged or foreign: remove */, OTHER /* another key */,
       OPENED /* entry_open: a file to read */ };

typedef struct entry {
    int fd;              /* the file that was read, kept open so its identity holds */
    struct stat st;
    int64_t expiry;
    size_t payload_off, payload_len;
} entry;

/* What flush and prune learn from a file's header. */
enum { NOT_OURS, BROKEN, INTACT, LINK /* a symbolic link at an entry's name */ };

typedef struct head {
    int64_t expiry;
    cachy_slice key;     /* points into the scratch buffer */
} head;

enum { PATH_TOP, PATH_BUCKET, PATH_ENTRY, PATH_TMP };

static const cachy_field file_fields[] = {
    { "path", CACHY_OPT_STRING, 1 },
    { "permissions", CACHY_OPT_INTEGER, 0 },   /* e.g. 416 (0640); default 384 (0600) */
    { NULL, CACHY_OPT_STRING, 0 },
};

/* ---- small helpers ----------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
    int i;
    for (i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    int i;
    for (i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int io_error(cachy_store *s, cachy_error *err, const char *what, const char *path, int e)
{
    cachy_error_set(err, s, CACHY_EIO, "%s %s: %s", what, path, strerror(e));
    return -1;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static int is_hex(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* The user's key (the store prefix removed) as messages show it. */
static const char *key_for_message(const cachy_store *s, cachy_slice key, char out[280])
{
    if (key.len >= s->prefix_len && memcmp(key.ptr, s->prefix, s->prefix_len) == 0) {
        key.ptr += s->prefix_len;
        key.len -= s->prefix_len;
    }
    cachy_quote_key(key, out, 280);
    return out;
}

static int64_t expiry_of(int64_t ttl_ms)
{
    int64_t at;
    if (ttl_ms <= 0)
        return 0;
    return cachy_checked_add(cachy_now_ms(), ttl_ms, &at) == 0 ? at : INT64_MAX;
}

static int expired(int64_t expiry)
{
    return expiry != 0 && expiry <= cachy_now_ms();
}

/* Reads up to n bytes at off, through short reads; bytes read or -1. */
static ssize_t read_at(int fd, void *buf, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* f->path set to one of the key's paths; returns it. */
static char *key_path(file_store *f, const char *hex, int which)
{
    char *p = f->path + f->rootlen;
    memcpy(p, "/", 1);
    memcpy(p + 1, hex, 2);
    p[3] = '/';
    memcpy(p + 4, hex + 2, 2);
    p += 6;
    if (which == PATH_TOP) {
        p -= 3;
    } else if (which != PATH_BUCKET) {
        *p++ = '/';
        memcpy(p, hex, HEX_LEN);
        p += HEX_LEN;
        if (which == PATH_TMP) {
            memcpy(p, TMP_SUFFIX, TMP_SUFFIX_LEN);
            p += TMP_SUFFIX_LEN;
        }
    }
    *p = '\0';
    return f->path;
}

/*
 * mkdir -p with `mode` for every directory it creates (chmod'ed, so the
 * umask does not narrow it). 0 ok, else the errno, with path cut after the
 * component that failed so that it names it.
 */
static int mkdir_p(char *path, mode_t mode)
{
    char *p = path;
    for (;;) {
        char *slash;
        while (*p == '/')
            p++;
        if (*p == '\0')
            return 0;
        slash = strchr(p, '/');
        if (slash)
            *slash = '\0';
        if (mkdir(path, mode) == 0) {
            if (chmod(path, mode) != 0)
                return errno;
        } else if (errno != EEXIST) {
            return errno;
        }
        if (slash == NULL)
            return 0;
        *slash = '/';
        p = slash + 1;
    }
}

/* ---- opening without following links ----------------------------------- */

/*
 * Opens path, an absolute path under the root, in one system call that
 * fails with ELOOP if any component of it is a symbolic link
 * (openat2 RESOLVE_NO_SYMLINKS). -1 with errno ENOSYS when the kernel has
 * no openat2 (before Linux 5.6) or a seccomp filter refuses it: the caller
 * then walks component by component (bucket_open).
 */
static int open_strict(file_store *f, const char *path, int flags)
{
#ifdef HAVE_OPENAT2
    if (!f->no_openat2) {
        struct file_open_how how;
        long fd;
        memset(&how, 0, sizeof how);
        how.flags = (uint64_t)flags;
        how.resolve = FILE_RESOLVE_NO_SYMLINKS;
        do
            fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
        while (fd < 0 && errno == EINTR);
        if (fd >= 0)
            return (int)fd;
        if (errno != ENOSYS && errno != EPERM && errno != EINVAL && errno != E2BIG)
            return -1;
        f->no_openat2 = 1;
    }
#else
    (void)f;
    (void)path;
    (void)flags;
#endif
    errno = ENOSYS;
    return -1;
}

/*
 * Opens the directory `name` under pfd without following a symbolic link.
 * With `create`, makes it if missing (mode exactly `mode`) and replaces a
 * symbolic link at the name by a directory: the link itself is unlinked,
 * never its target. Returns the fd; -2 when it is missing, a link or not
 * a directory and !create; -1 with errno otherwise.
 */
static int open_dir_at(int pfd, const char *name, int create, mode_t mode)
{
    int attempt;
    for (attempt = 0; attempt < LOCK_ATTEMPTS; attempt++) {
        struct stat st;
        int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno == ELOOP || errno == ENOTDIR) {
            /* Linux says ENOTDIR for a link with O_DIRECTORY | O_NOFOLLOW. */
            if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno == ENOENT)
                    continue;
                return -1;
            }
            if (S_ISDIR(st.st_mode))
                continue;   /* replaced meanwhile */
            if (!create)
                return -2;
            if (!S_ISLNK(st.st_mode)) {
                errno = ENOTDIR;
                return -1;
            }
            if (unlinkat(pfd, name, 0) != 0 && errno != ENOENT)
                return -1;
            continue;
        }
        if (errno != ENOENT)
            return -1;
        if (!create)
            return -2;
        if (mkdirat(pfd, name, mode) == 0) {
            /* chmod'ed, so that the umask does not narrow it */
            fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0) {
                if (fchmod(fd, mode) == 0)
                    return fd;
                close(fd);
                return -1;
            }
        } else if (errno != EEXIST) {
            return -1;
        }
    }
    errno = ELOOP;
    return -1;
}

/*
 * Opens the key's bucket directory root/ab/cd component by component: the
 * root as configured, ab and cd never through a symbolic link (see
 * open_dir_at; `create` creates what is missing, the root included).
 * Returns the bucket's fd with *topfd the fd of root/ab (the caller closes
 * both), -2 when it is absent and !create (a link counts as absent), -1 on
 * error.
 */
static int bucket_open(cachy_store *s, file_store *f, const char *hex, int create, int *topfd,
                       cachy_error *err)
{
    char name[3];
    int rfd, tfd, bfd, e;

    *topfd = -1;
    rfd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0 && errno == ENOENT && create) {
        f->path[f->rootlen] = '\0';
        e = mkdir_p(f->path, f->dmode);
        if (e != 0 && e != EEXIST)
            return io_error(s, err, "cannot create directory", f->path, e);
        rfd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (rfd < 0) {
        if ((errno == ENOENT || errno == ENOTDIR) && !create)
            return -2;
        return io_error(s, err, "cannot open directory", f->root, errno);
    }
    name[0] = hex[0];
    name[1] = hex[1];
    name[2] = '\0';
    tfd = open_dir_at(rfd, name, create, f->dmode);
    e = errno;
    close(rfd);
    if (tfd == -2)
        return -2;
    if (tfd < 0)
        return io_error(s, err, create ? "cannot create directory" : "cannot open directory",
                        key_path(f, hex, PATH_TOP), e);
    name[0] = hex[2];
    name[1] = hex[3];
    bfd = open_dir_at(tfd, name, create, f->dmode);
    e = errno;
    if (bfd < 0) {
        close(tfd);
        if (bfd == -2)
            return -2;
        return io_error(s, err, create ? "cannot create directory" : "cannot open directory",
                        key_path(f, hex, PATH_BUCKET), e);
    }
    *topfd = tfd;
    return bfd;
}

/* ---- locking ----------------------------------------------------------- */

/*
 * Opens the key's bucket directory and takes its lock, creating it when
 * `create`. Returns the fd (closing it unlocks), -2 when the bucket does
 * not exist and !create, -1 on error. A flush may remove the directory
 * while this process waits for the lock: the lock is then on a directory
 * nobody else will use, so it starts again. No symbolic link below the
 * root is followed (see bucket_open).
 */
static int bucket_lock(cachy_store *s, file_store *f, const char *hex, int create,
                       cachy_error *err)
{
    int attempt;
    for (attempt = 0; attempt < LOCK_ATTEMPTS; attempt++) {
        struct stat held, now;
        char *dir = key_path(f, hex, PATH_BUCKET);
        int tfd = -1, ok;
        int fd = open_strict(f, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT && !create)
                return -2;
            /* missing, behind a link, or no openat2: one component at a time */
            fd = bucket_open(s, f, hex, create, &tfd, err);
            if (fd < 0)
                return fd;
        }
        while (flock(fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                int e = errno;
                close(fd);
                if (tfd >= 0)
                    close(tfd);
                return io_error(s, err, "cannot lock", key_path(f, hex, PATH_BUCKET), e);
            }
        }
        /* Still the bucket at the key's name (a directory has one name: if
         * the name leads to it, it is that name's directory). */
        if (tfd >= 0) {
            char sub[3] = { hex[2], hex[3], '\0' };
            ok = fstatat(tfd, sub, &now, AT_SYMLINK_NOFOLLOW) == 0;
            close(tfd);
        } else {
            ok = fstatat(AT_FDCWD, key_path(f, hex, PATH_BUCKET), &now, AT_SYMLINK_NOFOLLOW) == 0;
        }
        if (ok && fstat(fd, &held) == 0 && same_file(&held, &now))
            return fd;
        close(fd);
    }
    cachy_error_set(err, s, CACHY_EIO, "cannot lock %s: removed by concurrent flushes %d times",
                    key_path(f, hex, PATH_BUCKET), LOCK_ATTEMPTS);
    return -1;
}

/* ---- reading and writing one entry ------------------------------------- */

/* STALE, with e->st filled in for remove_stale, unless fstat fails (-1). */
static int stale(cachy_store *s, file_store *f, const char *hex, entry *e, int have_st,
                 cachy_error *err)
{
    if (!have_st && fstat(e->fd, &e->st) != 0)
        return io_error(s, err, "cannot read", key_path(f, hex, PATH_ENTRY), errno);
    return STALE;
}

/*
 * Opens the key's entry file read-only, never through a symbolic link. dfd
 * is the locked bucket, or AT_FDCWD to open by full path without a lock
 * (one openat2 where the kernel has it; else, or when that meets a link,
 * component by component). Returns OPENED with e->fd open, ABSENT (nothing
 * there, or a link where a directory of the scheme should be), STALE (a
 * link at the entry's name; e->st from lstat, for remove_stale) or -1.
 */
static int entry_open(cachy_store *s, file_store *f, int dfd, const char *hex, entry *e,
                      cachy_error *err)
{
    /* O_NONBLOCK: a FIFO planted at this name must not hang the reader. */
    const int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int bfd = dfd, rc, ie;

    if (dfd == AT_FDCWD) {
        int tfd;
        e->fd = open_strict(f, key_path(f, hex, PATH_ENTRY), flags);
        if (e->fd >= 0)
            return OPENED;
        if (errno == ENOENT)   /* met before any link: really absent */
            return ABSENT;
        bfd = bucket_open(s, f, hex, 0, &tfd, err);
        if (bfd == -2)
            return ABSENT;
        if (bfd < 0)
            return -1;
        close(tfd);
    }
    e->fd = openat(bfd, hex, flags);
    ie = errno;
    if (e->fd >= 0)
        rc = OPENED;
    else if (ie == ENOENT || ie == ENOTDIR)
        rc = ABSENT;
    else if (ie == ELOOP)   /* a symbolic link is never ours */
        rc = fstatat(bfd, hex, &e->st, AT_SYMLINK_NOFOLLOW) == 0 ? STALE : ABSENT;
    else
        rc = io_error(s, err, "cannot read", key_path(f, hex, PATH_ENTRY), ie);
    if (bfd != dfd)
        close(bfd);
    return rc;
}

/*
 * Reads the file at the key's name into buf and classifies it. dfd is the
 * locked bucket, or AT_FDCWD to read by full path without a lock. Returns
 * ABSENT, LIVE, STALE (e->st set), OTHER or -1; e->fd is to be closed by the
 * caller. One read of FIRST_READ bytes comes first, and its header decides
 * how long the entry is: a header that is not ours or declares more than
 * MAX_ENTRY is STALE at once, whatever the file's size. When the read
 * returns fewer bytes and exactly as many as the header declares, they are
 * the whole entry (the checksum below vouches for them). Only otherwise is
 * the file's size asked (fstat, which would be one more system call on
 * every hit): it must be what the header declares, and only then is the
 * rest read.
 */
static int entry_read(cachy_store *s, file_store *f, int dfd, const char *hex, cachy_slice key,
                      cachy_buf *buf, entry *e, cachy_error *err)
{
    const unsigned char *h;
    uint64_t klen, plen;
    size_t size, total;
    ssize_t got;
    int have_st = 0, rc;

    buf->len = 0;
    e->fd = -1;
    rc = entry_open(s, f, dfd, hex, e, err);
    if (rc != OPENED)
        return rc;
    if (cachy_buf_reserve(buf, FIRST_READ + 1) != 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    do
        got = pread(e->fd, buf->data, FIRST_READ, 0);
    while (got < 0 && errno == EINTR);
    if (got < 0) {
        int re = errno;
        /* A directory or a FIFO at the name: not an entry. */
        if (fstat(e->fd, &e->st) == 0 && !S_ISREG(e->st.st_mode))
            return STALE;
        return io_error(s, err, "cannot read", key_path(f, hex, PATH_ENTRY), re);
    }
    size = (size_t)got;
    h = (const unsigned char *)buf->data;
    if (size < HEADER_LEN + TRAILER_LEN || memcmp(h, MAGIC, MAGIC_LEN) != 0 ||
        h[6] != FORMAT_VERSION || h[7] != 0)
        return stale(s, f, hex, e, have_st, err);
    klen = get32(h + 16);
    plen = get64(h + 20);
    if (plen > MAX_ENTRY - HEADER_LEN - TRAILER_LEN ||
        klen > MAX_ENTRY - HEADER_LEN - TRAILER_LEN - plen)
        return stale(s, f, hex, e, have_st, err);
    total = (size_t)(HEADER_LEN + klen + plen + TRAILER_LEN);
    if (size == FIRST_READ || size != total) {
        if (fstat(e->fd, &e->st) != 0)
            return io_error(s, err, "cannot read", key_path(f, hex, PATH_ENTRY), errno);
        have_st = 1;
        if (!S_ISREG(e->st.st_mode) || e->st.st_size != (off_t)total || total < size)
            return STALE;
        if (total > size) {
            if (cachy_buf_reserve(buf, total + 1) != 0) {
                cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
                return -1;
            }
            got = read_at(e->fd, buf->data + size, total - size, (off_t)size);
            if (got < 0)
                return io_error(s, err, "cannot read", key_path(f, hex, PATH_ENTRY), errno);
            if ((size_t)got != total - size)
                return STALE;
            size = total;
            h = (const unsigned char *)buf->data;
        }
    }
    if (XXH3_64bits(h, size - TRAILER_LEN) != get64(h + size - TRAILER_LEN))
        return stale(s, f, hex, e, have_st, err);
    if (klen != key.len || memcmp(h + HEADER_LEN, key.ptr, key.len) != 0)
        return OTHER;
    e->expiry = (int64_t)get64(h + 8);
    if (expired(e->expiry))
        return stale(s, f, hex, e, have_st, err);
    e->payload_off = HEADER_LEN + (size_t)klen;
    e->payload_len = (size_t)plen;
    return LIVE;
}

/* Writes the entry to <name>.tmp and renames it over <name>; dfd is the
 * locked bucket. On failure no temp file is left and the old entry stays. */
static int entry_write(cachy_store *s, file_store *f, int dfd, const char *hex, cachy_slice key,
                       cachy_slice val, int64_t expiry, cachy_error *err)
{
    cachy_buf *b = &f->io;
    char tmp[HEX_LEN + TMP_SUFFIX_LEN + 1];
    unsigned char *h;
    size_t total;
    int fd, e;

    if (key.len > MAX_ENTRY - HEADER_LEN - TRAILER_LEN ||
        val.len > MAX_ENTRY - HEADER_LEN - TRAILER_LEN - key.len) {
        cachy_error_set(err, s, CACHY_ETOOBIG,
                        "key and value too large for a file entry (512 MB at most)");
        return -1;
    }
    total = HEADER_LEN + key.len + val.len + TRAILER_LEN;
    b->len = 0;
    if (cachy_buf_reserve(b, total + 1) != 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    h = (unsigned char *)b->data;
    memcpy(h, MAGIC, MAGIC_LEN);
    h[6] = FORMAT_VERSION;
    h[7] = 0;
    put64(h + 8, (uint64_t)expiry);
    put32(h + 16, (uint32_t)key.len);
    put64(h + 20, (uint64_t)val.len);
    if (key.len)
        memcpy(h + HEADER_LEN, key.ptr, key.len);
    if (val.len)
        memcpy(h + HEADER_LEN + key.len, val.ptr, val.len);
    put64(h + total - TRAILER_LEN, XXH3_64bits(h, total - TRAILER_LEN));
    b->len = total;

    memcpy(tmp, hex, HEX_LEN);
    memcpy(tmp + HEX_LEN, TMP_SUFFIX, TMP_SUFFIX_LEN + 1);
    /* Left by a writer that died holding this lock. */
    unlinkat(dfd, tmp, 0);
    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, f->fmode);
    if (fd < 0)
        return io_error(s, err, "cannot write", key_path(f, hex, PATH_ENTRY), errno);
    if (fchmod(fd, f->fmode) != 0 || write_all(fd, b->data, total) != 0) {
        e = errno;
        close(fd);
        goto fail;
    }
    if (close(fd) != 0 || renameat(dfd, tmp, dfd, hex) != 0) {
        e = errno;
        goto fail;
    }
    return 0;
fail:
    unlinkat(dfd, tmp, 0);
    return io_error(s, err, "cannot write", key_path(f, hex, PATH_ENTRY), e);
}

/* Removes a stale file found without the lock, unless a writer has
 * replaced it since it was read. Failures leave it for later: still a miss. */
static void remove_stale(cachy_store *s, file_store *f, const char *hex, const entry *e)
{
    cachy_error ignored;
    struct stat now;
    int dfd = bucket_lock(s, f, hex, 0, &ignored);
    if (dfd < 0)
        return;
    if (fstatat(dfd, hex, &now, AT_SYMLINK_NOFOLLOW) == 0 && same_file(&now, &e->st))
        unlinkat(dfd, hex, 0);
    close(dfd);
}

/* ---- the operations ---------------------------------------------------- */

/*
 * Locks the key's bucket (see bucket_lock; *dfd is its result) and reads the
 * key's entry into f->io (see entry_read), closing the entry's file: the
 * callers want only its state and bytes. Returns the state, or -1 when the
 * bucket could not be locked (*dfd < 0) or the entry not read.
 */
static int locked_entry(cachy_store *s, file_store *f, cachy_slice key, int create,
                        char hex[HEX_LEN + 1], int *dfd, entry *e, cachy_error *err)
{
    int st;
    cachy_hash128_hex(key.ptr, key.len, hex);
    *dfd = bucket_lock(s, f, hex, create, err);
    if (*dfd < 0)
        return -1;
    st = entry_read(s, f, *dfd, hex, key, &f->io, e, err);
    if (e->fd >= 0)
        close(e->fd);
    return st;
}

static int file_open(cachy_store *s, cachy_error *err)
{
    const cachy_option *path = cachy_opt_find(&s->opts, "path");
    const cachy_option *perm = cachy_opt_find(&s->opts, "permissions");
    mode_t fmode = 0600;
    file_store *f;
    struct stat st;
    char *copy, *root;
    int e;

    if (path == NULL || path->type != CACHY_OPT_STRING || path->str[0] == '\0') {
        cachy_error_set(err, s, CACHY_EMISUSE, "the file driver needs a 'path' (a directory)");
        return -1;
    }
    snprintf(s->address, sizeof s->address, "%s", path->str);
    if (perm != NULL) {
        double v = perm->num;
        if ((perm->type != CACHY_OPT_INTEGER && perm->type != CACHY_OPT_NUMBER) ||
            !(v >= 0 && v <= 0777) || v != (double)(int)v || ((int)v & 0600) != 0600) {
            cachy_error_set(err, s, CACHY_EMISUSE,
                            "permissions must be a mode from 0600 (384) to 0777 (511) "
                            "that lets the owner read and write");
            return -1;
        }
        fmode = (mode_t)v;
    }

    copy = strdup(path->str);
    if (copy == NULL) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    e = mkdir_p(copy, fmode | ((fmode & 0444) >> 2));
    if (e != 0) {
        io_error(s, err, "cannot create directory", copy, e);
        free(copy);
        return -1;
    }
    free(copy);
    root = realpath(path->str, NULL);
    if (root == NULL)
        return io_error(s, err, "cannot open directory", path->str, errno);
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        cachy_error_set(err, s, CACHY_EIO, "%s is not a directory", root);
        free(root);
        return -1;
    }

    f = calloc(1, sizeof *f);
    if (f == NULL || (f->path = malloc(strlen(root) + PATH_TAIL)) == NULL) {
        free(f);
        free(root);
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    f->root = root;
    f->rootlen = strlen(root);
    memcpy(f->path, root, f->rootlen + 1);
    f->fmode = fmode;
    f->dmode = fmode | ((fmode & 0444) >> 2);
    snprintf(s->address, sizeof s->address, "%s", root);
    s->impl = f;
    return 0;
}

static void file_close(cachy_store *s)
{
    file_store *f = s->impl;
    if (f != NULL) {
        free(f->root);
        free(f->path);
        cachy_buf_free(&f->io);
        free(f);
    }
    s->impl = NULL;
}

/*
 * Reads the key's entry into out without the bucket's lock (see
 * entry_read), removing it when it is STALE: the readers' common part.
 * Returns the state; the caller closes e->fd when it is >= 0.
 */
static int read_entry(cachy_store *s, file_store *f, cachy_slice key, cachy_buf *out, entry *e,
                      cachy_error *err)
{
    char hex[HEX_LEN + 1];
    int st;

    cachy_hash128_hex(key.ptr, key.len, hex);
    st = entry_read(s, f, AT_FDCWD, hex, key, out, e, err);
    if (st == STALE)
        remove_stale(s, f, hex, e);
    return st;
}

static int file_get(cachy_store *s, cachy_slice key, cachy_buf *out, cachy_error *err)
{
    entry e;
    int st = read_entry(s, s->impl, key, out, &e, err);

    if (st == LIVE) {
        memmove(out->data, out->data + e.payload_off, e.payload_len);
        out->len = e.payload_len;
        out->data[out->len] = '\0';
    } else {
        out->len = 0;
    }
    if (e.fd >= 0)
        close(e.fd);
    return st == LIVE ? 1 : st < 0 ? -1 : 0;
}

/* The lifetime a live entry has left (expiries are wall-clock ms); the
 * entry is read whole into the scratch buffer, its checksum checked. */
static int file_ttl(cachy_store *s, cachy_slice key, int64_t *ms_left, cachy_error *err)
{
    file_store *f = s->impl;
    entry e;
    int st = read_entry(s, f, key, &f->io, &e, err);

    if (st == LIVE) {
        int64_t left = e.expiry - cachy_now_ms();
        *ms_left = e.expiry == 0 ? 0 : left > 0 ? left : 1;
    }
    if (e.fd >= 0)
        close(e.fd);
    return st == LIVE ? 1 : st < 0 ? -1 : 0;
}

static int file_put(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                    cachy_error *err)
{
    file_store *f = s->impl;
    char hex[HEX_LEN + 1];
    int dfd, rc;

    cachy_hash128_hex(key.ptr, key.len, hex);
    dfd = bucket_lock(s, f, hex, 1, err);
    if (dfd < 0)
        return -1;
    rc = entry_write(s, f, dfd, hex, key, val, expiry_of(ttl_ms), err);
    close(dfd);
    return rc;
}

static int file_add(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                    cachy_error *err)
{
    file_store *f = s->impl;
    char hex[HEX_LEN + 1];
    entry e;
    int dfd, st, rc;

    st = locked_entry(s, f, key, 1, hex, &dfd, &e, err);
    if (dfd < 0)
        return -1;
    if (st < 0)
        rc = -1;
    else if (st == LIVE)
        rc = 0;
    else
        rc = entry_write(s, f, dfd, hex, key, val, expiry_of(ttl_ms), err) == 0 ? 1 : -1;
    close(dfd);
    return rc;
}

/* Whether the entry read into f->io holds exactly val. */
static int entry_holds(const file_store *f, const entry *e, cachy_slice val)
{
    return e->payload_len == val.len &&
           (val.len == 0 || memcmp(f->io.data + e->payload_off, val.ptr, val.len) == 0);
}

/* Removes the key's entry, or with touch_ms > 0 rewrites it to live that
 * long; with `only`, only while it holds exactly those bytes (forget_if,
 * touch_if: the bucket lock keeps other writers out between the comparison
 * and the change). 1 done, 0 not, -1 error. */
static int change_entry(cachy_store *s, cachy_slice key, const cachy_slice *only, int64_t touch_ms,
                        cachy_error *err)
{
    file_store *f = s->impl;
    char hex[HEX_LEN + 1];
    entry e;
    int dfd, st, rc = 0;

    st = locked_entry(s, f, key, 0, hex, &dfd, &e, err);
    if (dfd == -2)
        return 0;
    if (dfd < 0)
        return -1;
    if (st < 0) {
        rc = -1;
    } else if (st == LIVE && (only == NULL || entry_holds(f, &e, *only))) {
        if (touch_ms > 0 && only != NULL)
            rc = entry_write(s, f, dfd, hex, key, *only, expiry_of(touch_ms), err) == 0 ? 1 : -1;
        else if (unlinkat(dfd, hex, 0) == 0)
            rc = 1;
        else
            rc = io_error(s, err, "cannot remove", key_path(f, hex, PATH_ENTRY), errno);
    } else if (st == STALE) {
        unlinkat(dfd, hex, 0);   /* not a value: a failure changes nothing the caller sees */
    }
    close(dfd);
    return rc;
}

static int file_forget(cachy_store *s, cachy_slice key, cachy_error *err)
{
    return change_entry(s, key, NULL, 0, err);
}

static int file_forget_if(cachy_store *s, cachy_slice key, cachy_slice val, cachy_error *err)
{
    return change_entry(s, key, &val, 0, err);
}

static int file_touch_if(cachy_store *s, cachy_slice key, cachy_slice val, int64_t ttl_ms,
                         cachy_error *err)
{
    return change_entry(s, key, &val, ttl_ms, err);
}

static int file_incr(cachy_store *s, cachy_slice key, int64_t by, int64_t *result,
                     cachy_error *err)
{
    file_store *f = s->impl;
    char hex[HEX_LEN + 1], num[24], shown[280];
    int64_t cur = 0, next, expiry = 0;
    cachy_slice text;
    entry e;
    int dfd, st, rc = -1;

    st = locked_entry(s, f, key, 1, hex, &dfd, &e, err);
    if (dfd < 0)
        return -1;
    if (st < 0)
        goto done;
    if (st == LIVE) {
        cachy_slice v = { f->io.data + e.payload_off, e.payload_len };
        if (!cachy_parse_int(v, &cur)) {
            cachy_error_set(err, s, CACHY_ENOTINT, "value of key '%s' is not an integer",
                            key_for_message(s, key, shown));
            goto done;
        }
        expiry = e.expiry;
    }
    if (cachy_checked_add(cur, by, &next) != 0) {
        cachy_error_set(err, s, CACHY_ERANGE, "increment of key '%s' overflows 64 bits",
                        key_for_message(s, key, shown));
        goto done;
    }
    text.ptr = num;
    text.len = cachy_format_int(next, num);
    if (entry_write(s, f, dfd, hex, key, text, expiry, err) == 0) {
        *result = next;
        rc = 0;
    }
done:
    close(dfd);
    return rc;
}

/* ---- walking the whole directory (flush, prune) ------------------------ */

/*
 * Reads the header and key of an entry file for flush and prune, which
 * decide on those alone. Returns NOT_OURS, BROKEN, INTACT, LINK or -1.
 */
static int head_read(cachy_store *s, file_store *f, int dfd, const char *dir, const char *name,
                     head *hd, cachy_error *err)
{
    unsigned char h[HEADER_LEN];
    struct stat st;
    uint64_t klen, plen;
    ssize_t got;
    int fd, rc = NOT_OURS;

    fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP)
            return LINK;
        if (errno == ENOENT)
            return NOT_OURS;
        cachy_error_set(err, s, CACHY_EIO, "cannot read %s/%s: %s", dir, name, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        goto done;
    got = read_at(fd, h, HEADER_LEN, 0);
    if (got < 0) {
        cachy_error_set(err, s, CACHY_EIO, "cannot read %s/%s: %s", dir, name, strerror(errno));
        rc = -1;
        goto done;
    }
    if (got < MAGIC_LEN || memcmp(h, MAGIC, MAGIC_LEN) != 0)
        goto done;
    rc = BROKEN;
    if (got < HEADER_LEN || h[6] != FORMAT_VERSION || h[7] != 0)
        goto done;
    klen = get32(h + 16);
    plen = get64(h + 20);
    if ((uint64_t)st.st_size > MAX_ENTRY || plen > (uint64_t)st.st_size ||
        HEADER_LEN + klen + plen + TRAILER_LEN != (uint64_t)st.st_size)
        goto done;
    f->io.len = 0;
    if (cachy_buf_reserve(&f->io, (size_t)klen + 1) != 0) {
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        rc = -1;
        goto done;
    }
    got = read_at(fd, f->io.data, (size_t)klen, HEADER_LEN);
    if (got < 0) {
        cachy_error_set(err, s, CACHY_EIO, "cannot read %s/%s: %s", dir, name, strerror(errno));
        rc = -1;
        goto done;
    }
    if ((uint64_t)got != klen)
        goto done;
    hd->expiry = (int64_t)get64(h + 8);
    hd->key.ptr = f->io.data;
    hd->key.len = (size_t)klen;
    rc = INTACT;
done:
    close(fd);
    return rc;
}

typedef struct walk_ctx {
    int prune;           /* 0: flush */
    cachy_slice prefix;  /* flush: only keys starting with it */
} walk_ctx;

/* Whether the walk removes symbolic links at the scheme's names: prune
 * and a flush of everything do; a flush of one prefix keeps to its keys. */
static int removes_links(const walk_ctx *w)
{
    return w->prune || w->prefix.len == 0;
}

/* Decides about one file of a locked bucket; temp files there are
 * leftovers of writers that died. A symbolic link at an entry's name is
 * unlinked (the link, not its target) by prune and a whole flush. 0 ok,
 * -1 error. */
static int visit(cachy_store *s, file_store *f, int dfd, const char *dir, const char *name,
                 int is_tmp, const walk_ctx *w, cachy_error *err)
{
    head hd;
    if (!is_tmp) {
        int st = head_read(s, f, dfd, dir, name, &hd, err);
        if (st < 0)
            return -1;
        if (st == NOT_OURS || (st == LINK && !removes_links(w)))
            return 0;
        if (st == LINK) {
            /* removed below */
        } else if (w->prune) {
            if (st == INTACT && !expired(hd.expiry))
                return 0;
        } else if (w->prefix.len > 0) {
            if (st != INTACT || hd.key.len < w->prefix.len ||
                memcmp(hd.key.ptr, w->prefix.ptr, w->prefix.len) != 0)
                return 0;
        }
    }
    if (unlinkat(dfd, name, 0) != 0 && errno != ENOENT) {
        cachy_error_set(err, s, CACHY_EIO, "cannot remove %s/%s: %s", dir, name, strerror(errno));
        return -1;
    }
    return 0;
}

/* Opens a directory of the naming scheme under pfd, never through a
 * symbolic link; -1 with errno. A link at the name is unlinked (the link
 * itself) when the walk removes links, and reads as ENOENT either way. */
static int open_subdir(int pfd, const char *name, const walk_ctx *w)
{
    struct stat st;
    int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
        int e = errno;
        if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
            if (removes_links(w))
                unlinkat(pfd, name, 0);
            e = ENOENT;
        }
        errno = e;
    }
    return fd;
}

/* Visits the entries of bucket `top`/`sub` under its lock, then removes it
 * if it is empty. 0 ok, -1 error. */
static int walk_bucket(cachy_store *s, file_store *f, int topfd, const char *top, const char *sub,
                       const walk_ctx *w, cachy_error *err)
{
    struct stat held, now;
    struct dirent *de;
    DIR *d;
    int fd, rc = 0;
    char *dir = f->path;

    fd = open_subdir(topfd, sub, w);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return 0;   /* gone meanwhile, or not a directory of ours */
        cachy_error_set(err, s, CACHY_EIO, "cannot open directory %s/%s/%s: %s", f->root, top,
                        sub, strerror(errno));
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            cachy_error_set(err, s, CACHY_EIO, "cannot lock %s/%s/%s: %s", f->root, top, sub,
                            strerror(errno));
            close(fd);
            return -1;
        }
    }
    /* Removed by another flush while this one waited: nothing left in it. */
    if (fstat(fd, &held) != 0 || fstatat(topfd, sub, &now, AT_SYMLINK_NOFOLLOW) != 0 ||
        !same_file(&held, &now)) {
        close(fd);
        return 0;
    }
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    snprintf(dir + f->rootlen, PATH_TAIL, "/%s/%s", top, sub);
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        int is_tmp = n == HEX_LEN + TMP_SUFFIX_LEN &&
                     memcmp(de->d_name + HEX_LEN, TMP_SUFFIX, TMP_SUFFIX_LEN) == 0;
        if ((n != HEX_LEN && !is_tmp) || !is_hex(de->d_name, HEX_LEN) ||
            memcmp(de->d_name, top, 2) != 0 || memcmp(de->d_name + 2, sub, 2) != 0)
            continue;
        rc = visit(s, f, fd, dir, de->d_name, is_tmp, w, err);
        if (rc != 0)
            break;
    }
    /* Only succeeds when empty: a foreign file keeps its directory. */
    unlinkat(topfd, sub, AT_REMOVEDIR);
    closedir(d);
    return rc;
}

static int walk_top(cachy_store *s, file_store *f, int rootfd, const char *top,
                    const walk_ctx *w, cachy_error *err)
{
    struct dirent *de;
    DIR *d;
    int fd, rc = 0;

    fd = open_subdir(rootfd, top, w);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return 0;
        cachy_error_set(err, s, CACHY_EIO, "cannot open directory %s/%s: %s", f->root, top,
                        strerror(errno));
        return -1;
    }
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        cachy_error_set(err, s, CACHY_ENOMEM, "out of memory");
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 2 || !is_hex(de->d_name, 2))
            continue;
        rc = walk_bucket(s, f, fd, top, de->d_name, w, err);
        if (rc != 0)
            break;
    }
    closedir(d);
    unlinkat(rootfd, top, AT_REMOVEDIR);
    return rc;
}

/* Every bucket under the root, each under its own lock. */
static int walk(cachy_store *s, file_store *f, const walk_ctx *w, cachy_error *err)
{
    struct dirent *de;
    DIR *d;
    int rc = 0;

    d = opendir(f->root);
    if (d == NULL)
        return io_error(s, err, "cannot open directory", f->root, errno);
    while ((de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 2 || !is_hex(de->d_name, 2))
            continue;
        rc = walk_top(s, f, dirfd(d), de->d_name, w, err);
        if (rc != 0)
            break;
    }
    closedir(d);
    return rc;
}

static int file_flush(cachy_store *s, cachy_slice prefix, cachy_error *err)
{
    walk_ctx w = { 0, prefix };
    return walk(s, s->impl, &w, err);
}

/* Removes expired and damaged entries, and temp files of writers that died. */
static int file_prune(cachy_store *s, cachy_error *err)
{
    walk_ctx w = { 1, { "", 0 } };
    return walk(s, s->impl, &w, err);
}

const cachy_store_ops cachy_file_ops = {
    .name = "file",
    .fields = file_fields,
    .open = file_open,
    .get = file_get,
    .put = file_put,
    .add = file_add,
    .forget = file_forget,
    .incr = file_incr,
    .flush = file_flush,
    .ttl = file_ttl,
    .forget_if = file_forget_if,
    .touch_if = file_touch_if,
    .prune = file_prune,
    .close = file_close,
};
