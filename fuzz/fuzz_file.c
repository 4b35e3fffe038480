/*
 * fuzz_file.c: libFuzzer harness for the file store's entry parser
 * (entry_read and head_read in csrc/store_file.c, included here so that its
 * static functions are reachable without changing the driver).
 *
 * The input's first two bytes are control bytes, the rest is planted as
 * the entry file of a key; then one store operation runs on it. First byte:
 *
 *   bit 0   make the length fields agree with the file's size
 *   bit 1   write the right checksum into the trailer
 *   bit 2   look the entry up by the key stored in it (else by "k")
 *   bits 3-5  get, add, increment, forget, prune, flush "k", flush all, get
 *   bits 6-7  increment by 1, -1, INT64_MAX, INT64_MIN
 *
 * Second byte, where and how large the file is:
 *
 *   bits 0-1  0: the file at the entry's name; 1: a symbolic link at the
 *             entry's name to the file outside the store's directory;
 *             2: the bucket directory (ab/cd) a link to a directory outside
 *             holding the file; 3: the same with the top directory (ab)
 *   bits 2-3  0: as is; 1: padded with zeros to the length its header
 *             declares when that is at most 64 KB (before bit 1's checksum);
 *             2: extended, sparse, by 1 GB; 3: the payload length set to
 *             64 GB and the file extended, sparse, to exactly what the
 *             header then declares
 *   bits 4-7  unused
 *
 * Bits 0-2 of the first byte let the fuzzer past the checksum and the key
 * comparison to the payload. The result and the file left behind are
 * checked against the format the driver's header comment documents (a
 * model written here): a live entry is read back exactly, anything else
 * with the magic is a miss and removed, a file without the magic survives
 * prune and flush, a file larger than MAX_ENTRY or longer than its header
 * says is a miss without being read (the store's buffers stay under 1 MB).
 * Behind a link nothing is an entry: every operation acts as if the key
 * were absent, the file outside is left exactly as it was and nothing else
 * appears there; the link is replaced by writes, removed by prune, a whole
 * flush, and (at the entry's name) by get and forget, and kept otherwise.
 *
 * Files go under $CACHY_FUZZ_DIR, or a fresh directory in /dev/shm (else
 * /tmp) removed at exit; the "outside" directory is that path with ".out"
 * appended.
 */
#include "../csrc/store_file.c"

#include <inttypes.h>

static cachy_store fz_store;
static char fz_root[4096];
static char fz_out[4200];
static int fz_root_owned;

static void fz_fail(const char *what, const cachy_error *err)
{
    fprintf(stderr, "fuzz_file: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    abort();
}

/* Empties dir, never following a link (a link is unlinked, not its
 * target), keeping dir itself. */
static void fz_empty(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    struct stat st;
    char sub[4400];
    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
            fz_empty(sub);
            rmdir(sub);
        } else {
            unlink(sub);
        }
    }
    closedir(d);
}

static void fz_cleanup(void)
{
    cachy_error err;
    if (fz_store.impl != NULL) {
        file_flush(&fz_store, (cachy_slice){ "", 0 }, &err);
        file_close(&fz_store);
    }
    fz_empty(fz_out);
    rmdir(fz_out);
    if (fz_root_owned)
        rmdir(fz_root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("CACHY_FUZZ_DIR");
    cachy_error err;
    if (dir != NULL && dir[0] != '\0') {
        snprintf(fz_root, sizeof fz_root, "%s", dir);
    } else {
        struct stat st;
        snprintf(fz_root, sizeof fz_root, "%s/cachy-fuzz-file.XXXXXX",
                 stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp");
        if (mkdtemp(fz_root) == NULL)
            fz_fail("cannot create a directory for the store", NULL);
        fz_root_owned = 1;
    }
    snprintf(fz_out, sizeof fz_out, "%s.out", fz_root);
    if (mkdir(fz_out, 0700) != 0 && errno != EEXIST)
        fz_fail("cannot create the outside directory", NULL);
    fz_store.name = "fuzz";
    fz_store.driver = "file";
    fz_store.prefix = "";
    if (cachy_options_add_string(&fz_store.opts, "path", fz_root) != 0)
        fz_fail("out of memory", NULL);
    if (file_open(&fz_store, &err) != 0)
        fz_fail("cannot open the store", &err);
    atexit(fz_cleanup);
    return 0;
}

/* ---- the model of the format ------------------------------------------- */

enum { M_STALE, M_OTHER, M_LIVE };

typedef struct model {
    int kind;            /* what entry_read must find for the key */
    int magic;           /* starts with the magic: flush and prune may touch it */
    int intact;          /* header and lengths agree with the size (what flush and prune read) */
    int64_t expiry;
    cachy_slice key, payload;
    int uncertain;       /* expiry too close to now to predict */
} model;

/* The file is p[0..n) followed by zeros up to fsize bytes (fsize >= n). */
static model fz_model(const unsigned char *p, size_t n, uint64_t fsize, cachy_slice key)
{
    model m = { M_STALE, 0, 0, 0, { NULL, 0 }, { NULL, 0 }, 0 };
    uint64_t klen, plen;
    int64_t now;
    size_t i;
    /* The magic as the store sees it: the zeros of an extension count. */
    m.magic = fsize >= MAGIC_LEN;
    for (i = 0; i < MAGIC_LEN && m.magic; i++)
        m.magic = (i < n ? p[i] : 0) == (unsigned char)MAGIC[i];
    /* Extended files are all over MAX_ENTRY: never an entry. */
    if (!m.magic || fsize != n || n < HEADER_LEN || p[6] != FORMAT_VERSION || p[7] != 0)
        return m;
    klen = get32(p + 16);
    plen = get64(p + 20);
    if (plen > n || klen > n || HEADER_LEN + klen + plen + TRAILER_LEN != n)
        return m;
    m.intact = 1;
    m.expiry = (int64_t)get64(p + 8);
    now = cachy_now_ms();
    m.uncertain = m.expiry != 0 && m.expiry > now - 60000 && m.expiry < now + 60000;
    m.key.ptr = (const char *)p + HEADER_LEN;
    m.key.len = (size_t)klen;
    m.payload.ptr = (const char *)p + HEADER_LEN + klen;
    m.payload.len = (size_t)plen;
    if (XXH3_64bits(p, n - TRAILER_LEN) != get64(p + n - TRAILER_LEN))
        return m;
    if (klen != key.len || memcmp(m.key.ptr, key.ptr, key.len) != 0) {
        m.kind = M_OTHER;
        return m;
    }
    m.kind = (m.expiry != 0 && m.expiry <= now) ? M_STALE : M_LIVE;
    return m;
}

static int fz_expired(const model *m)
{
    return m->expiry != 0 && m->expiry <= cachy_now_ms();
}

/* ---- files ------------------------------------------------------------- */

static void fz_paths(const char *hex, char *dir1, char *dir2, char *file, char *tmp)
{
    snprintf(dir1, 4200, "%s/%.2s", fz_root, hex);
    snprintf(dir2, 4200, "%s/%.2s/%.2s", fz_root, hex, hex + 2);
    snprintf(file, 4200, "%s/%s", dir2, hex);
    snprintf(tmp, 4200, "%s/%s.tmp", dir2, hex);
}

/* Writes p[0..n) to path and extends it (sparse) to fsize bytes. */
static void fz_write_file(const char *path, const void *p, size_t n, uint64_t fsize)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, p, n) != 0 || (fsize > n && ftruncate(fd, (off_t)fsize) != 0) ||
        close(fd) != 0)
        fz_fail("cannot plant the entry file", NULL);
}

/* Files larger than this are compared by size and their first bytes only. */
#define FZ_READ_MAX (1u << 20)

static uint64_t fz_size;   /* the size of the file fz_read last read */

/* The file's content (at most FZ_READ_MAX bytes of it) into b; 0 if there
 * is no file. Never follows a link at the last component: a link reads as
 * no file. */
static int fz_read(const char *path, cachy_buf *b)
{
    struct stat st;
    size_t want;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    b->len = 0;
    fz_size = 0;
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        fz_fail("the entry's name holds something other than a file", NULL);
    want = (uint64_t)st.st_size > FZ_READ_MAX ? FZ_READ_MAX : (size_t)st.st_size;
    if (cachy_buf_reserve(b, want + 1) != 0 || read_at(fd, b->data, want, 0) != (ssize_t)want)
        fz_fail("cannot read the entry file back", NULL);
    b->len = want;
    fz_size = (uint64_t)st.st_size;
    close(fd);
    return 1;
}

/* Whether the file fz_read read is p[0..n) followed by zeros to fsize. */
static int fz_same_file(const cachy_buf *b, const void *p, size_t n, uint64_t fsize)
{
    return fz_size == fsize && b->len >= n && (n == 0 || memcmp(b->data, p, n) == 0);
}

static int fz_same(const cachy_buf *b, const void *p, size_t n)
{
    return b->len == n && (n == 0 || memcmp(b->data, p, n) == 0);
}

/* lstat's idea of path: 'l' link, 'd' directory, 'f' file, 'o' other, 0 absent. */
static char fz_kind(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    return S_ISLNK(st.st_mode) ? 'l' : S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : 'o';
}

/* Number of names in dir, recursively (not following links). */
static int fz_count(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char sub[4400];
    int n = 0;
    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        n++;
        snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
        if (fz_kind(sub) == 'd')
            n += fz_count(sub);
    }
    closedir(d);
    return n;
}

/* After a write, the file must be a live entry of key holding val. */
static void fz_expect_entry(const char *path, cachy_slice key, cachy_slice val, int64_t expiry,
                            cachy_buf *b)
{
    model m;
    if (!fz_read(path, b))
        fz_fail("a write left no file", NULL);
    m = fz_model((const unsigned char *)b->data, b->len, fz_size, key);
    if (m.kind != M_LIVE || m.expiry != expiry || m.payload.len != val.len ||
        memcmp(m.payload.ptr, val.ptr, val.len) != 0)
        fz_fail("a write left a file that is not the entry written", NULL);
}

/* ---- one input ----------------------------------------------------- */

enum { L_NONE, L_ENTRY, L_BUCKET, L_TOP };

/* Plants the file, directly or behind a link (see the header comment);
 * *outside is set to where the file really is. */
static void fz_plant(int link, const char *hex, const char *dir1, const char *dir2,
                     const char *path, const void *p, size_t n, uint64_t fsize, char *outside)
{
    char sub[4300];
    switch (link) {
    case L_NONE:
        mkdir(dir1, 0700);
        mkdir(dir2, 0700);
        snprintf(outside, 4300, "%s", path);
        break;
    case L_ENTRY:
        mkdir(dir1, 0700);
        mkdir(dir2, 0700);
        snprintf(outside, 4300, "%s/target", fz_out);
        if (symlink(outside, path) != 0)
            fz_fail("cannot plant the link", NULL);
        break;
    case L_BUCKET:
        mkdir(dir1, 0700);
        snprintf(outside, 4300, "%s/%s", fz_out, hex);
        if (symlink(fz_out, dir2) != 0)
            fz_fail("cannot plant the link", NULL);
        break;
    default:
        snprintf(sub, sizeof sub, "%s/%.2s", fz_out, hex + 2);
        mkdir(sub, 0700);
        snprintf(outside, 4300, "%s/%s", sub, hex);
        if (symlink(fz_out, dir1) != 0)
            fz_fail("cannot plant the link", NULL);
        break;
    }
    fz_write_file(outside, p, n, fsize);
}

/* Behind a link: the file outside is as planted, nothing else is there,
 * and the link is where `kept` says (1 kept, 0 gone or replaced). */
static void fz_check_link(int link, const char *dir1, const char *dir2, const char *path,
                          const char *outside, const void *p, size_t n, uint64_t fsize, int kept,
                          cachy_buf *b)
{
    const char *at = link == L_ENTRY ? path : link == L_BUCKET ? dir2 : dir1;
    if (!fz_read(outside, b) || !fz_same_file(b, p, n, fsize))
        fz_fail("the file behind a link was changed or removed", NULL);
    if (fz_count(fz_out) != (link == L_TOP ? 2 : 1))
        fz_fail("something was written outside the store's directory", NULL);
    if ((fz_kind(at) == 'l') != kept)
        fz_fail(kept ? "a link the operation should leave was removed"
                     : "a link was left where the store's name is", NULL);
    if (!kept && fz_kind(at) != 0 && fz_kind(at) != (link == L_ENTRY ? 'f' : 'd'))
        fz_fail("a link was replaced by something unexpected", NULL);
}

/* The store's scratch and the caller's buffer never grow to a large
 * file's size: a file is judged by its header and size before it is read. */
static void fz_check_buffers(const cachy_buf *out)
{
    const file_store *f = fz_store.impl;
    if (f->io.cap > FZ_READ_MAX || out->cap > FZ_READ_MAX)
        fz_fail("a buffer grew past 1 MB: a file was read beyond its header", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t steps[4] = { 1, -1, INT64_MAX, INT64_MIN };
    char hex[HEX_LEN + 1], dir1[4200], dir2[4200], path[4200], tmp[4200], outside[4300];
    unsigned char *p;
    size_t n;
    uint64_t fsize;
    unsigned ctl, place;
    int link, grow;
    cachy_slice key = { "k", 1 };
    cachy_buf out = { 0 }, after = { 0 };
    cachy_error err;
    model m;
    int rc, present;

    if (size < 2)
        return 0;
    ctl = data[0];
    place = data[1];
    link = place & 3;
    grow = (place >> 2) & 3;
    n = size - 2;
    p = malloc(n + 1);
    if (p == NULL)
        return 0;
    memcpy(p, data + 2, n);

    if ((ctl & 1) && n >= HEADER_LEN + TRAILER_LEN) {
        uint64_t klen = get32(p + 16);
        if (klen <= n - HEADER_LEN - TRAILER_LEN)
            put64(p + 20, n - HEADER_LEN - TRAILER_LEN - klen);
    }
    if (grow == 1 && n >= HEADER_LEN) {
        uint64_t klen = get32(p + 16), plen = get64(p + 20);
        uint64_t total = HEADER_LEN + klen + TRAILER_LEN;
        if (plen <= 65536 && total + plen <= 65536 && total + plen > n) {
            unsigned char *q = realloc(p, (size_t)(total + plen) + 1);
            if (q == NULL) {
                free(p);
                return 0;
            }
            p = q;
            memset(p + n, 0, (size_t)(total + plen) - n);
            n = (size_t)(total + plen);
        }
    }
    if ((ctl & 2) && n >= TRAILER_LEN)
        put64(p + n - TRAILER_LEN, XXH3_64bits(p, n - TRAILER_LEN));
    if ((ctl & 4) && n >= HEADER_LEN + TRAILER_LEN) {
        uint64_t klen = get32(p + 16);
        if (klen <= n - HEADER_LEN - TRAILER_LEN) {
            key.ptr = (const char *)p + HEADER_LEN;
            key.len = (size_t)klen;
        }
    }
    fsize = n;
    if (grow == 2) {
        fsize = n + ((uint64_t)1 << 30);
    } else if (grow == 3 && n >= HEADER_LEN) {
        /* The key (bit 2) lies after the header: not changed here. */
        uint64_t big = (uint64_t)1 << 36;
        put64(p + 20, big);
        fsize = HEADER_LEN + (uint64_t)get32(p + 16) + big + TRAILER_LEN;
    }

    cachy_hash128_hex(key.ptr, key.len, hex);
    fz_paths(hex, dir1, dir2, path, tmp);
    fz_plant(link, hex, dir1, dir2, path, p, n, fsize, outside);
    m = fz_model(p, n, fsize, key);

    if (link != L_NONE) {
        /* Nothing behind a link is an entry: the key is absent. */
        int op = (ctl >> 3) & 7;
        int64_t by = steps[ctl >> 6], res = 0;
        cachy_slice val = { "v", 1 }, text;
        char num[24];
        int kept = 1;
        switch (op) {
        case 0:
        case 7:
            rc = file_get(&fz_store, key, &out, &err);
            if (rc != 0)
                fz_fail(rc < 0 ? "get behind a link failed" : "get read an entry through a link",
                        rc < 0 ? &err : NULL);
            kept = link != L_ENTRY;
            break;
        case 1:
            rc = file_add(&fz_store, key, val, 0, &err);
            if (rc != 1)
                fz_fail("add behind a link did not store", rc < 0 ? &err : NULL);
            fz_expect_entry(path, key, val, 0, &after);
            kept = 0;
            break;
        case 2:
            rc = file_incr(&fz_store, key, by, &res, &err);
            if (rc != 0 || res != by)
                fz_fail("increment behind a link did not start from 0", rc < 0 ? &err : NULL);
            text.ptr = num;
            text.len = cachy_format_int(by, num);
            fz_expect_entry(path, key, text, 0, &after);
            kept = 0;
            break;
        case 3:
            rc = file_forget(&fz_store, key, &err);
            if (rc != 0)
                fz_fail(rc < 0 ? "forget behind a link failed" : "forget removed through a link",
                        rc < 0 ? &err : NULL);
            kept = link != L_ENTRY;
            break;
        case 4:
            if (file_prune(&fz_store, &err) != 0)
                fz_fail("prune failed", &err);
            kept = 0;
            break;
        case 5:
            if (file_flush(&fz_store, (cachy_slice){ "k", 1 }, &err) != 0)
                fz_fail("flush failed", &err);
            break;
        case 6:
            if (file_flush(&fz_store, (cachy_slice){ "", 0 }, &err) != 0)
                fz_fail("flush failed", &err);
            kept = 0;
            break;
        }
        fz_check_link(link, dir1, dir2, path, outside, p, n, fsize, kept, &after);
        if (op == 1 || op == 2) {
            if (fz_kind(dir1) != 'd' || fz_kind(dir2) != 'd' || fz_kind(path) != 'f')
                fz_fail("a write behind a link did not land in real directories", NULL);
        }
        fz_check_buffers(&out);
        goto cleanup;
    }

    switch ((ctl >> 3) & 7) {
    case 0:
    case 7:   /* get */
        rc = file_get(&fz_store, key, &out, &err);
        if (rc < 0)
            fz_fail("get failed", &err);
        present = fz_read(path, &after);
        if (!m.uncertain) {
            if (rc != (m.kind == M_LIVE))
                fz_fail(rc ? "get found an entry the format does not allow"
                           : "get missed a valid live entry", NULL);
            if (rc && !fz_same(&out, m.payload.ptr, m.payload.len))
                fz_fail("get returned other bytes than the payload", NULL);
            if (present != (m.kind != M_STALE))
                fz_fail(present ? "get left a stale file" : "get removed a valid file", NULL);
        }
        break;
    case 1: { /* add */
        cachy_slice val = { "v", 1 };
        rc = file_add(&fz_store, key, val, 0, &err);
        if (rc < 0)
            fz_fail("add failed", &err);
        if (!m.uncertain && rc != (m.kind != M_LIVE))
            fz_fail("add disagrees with the model", NULL);
        if (rc == 1)
            fz_expect_entry(path, key, val, 0, &after);
        else if (!fz_read(path, &after) || !fz_same_file(&after, p, n, fsize))
            fz_fail("add that stored nothing changed the file", NULL);
        break;
    }
    case 2: { /* increment */
        int64_t by = steps[ctl >> 6], cur = 0, want = 0, res = 0;
        int live = m.kind == M_LIVE, is_int = 0, overflow;
        char num[24];
        cachy_slice text;
        if (live)
            is_int = cachy_parse_int(m.payload, &cur);
        overflow = cachy_checked_add(live && is_int ? cur : 0, by, &want) != 0;
        rc = file_incr(&fz_store, key, by, &res, &err);
        if (m.uncertain)
            break;
        if (live && !is_int) {
            if (rc != -1 || err.code != CACHY_ENOTINT)
                fz_fail("increment of a value that is not an integer did not fail", NULL);
        } else if (overflow) {
            if (rc != -1 || err.code != CACHY_ERANGE)
                fz_fail("increment that overflows did not fail", NULL);
        } else {
            if (rc != 0)
                fz_fail("increment failed", &err);
            if (res != want)
                fz_fail("increment returned a wrong value", NULL);
            text.ptr = num;
            text.len = cachy_format_int(want, num);
            fz_expect_entry(path, key, text, live ? m.expiry : 0, &after);
            break;
        }
        if (!fz_read(path, &after) || !fz_same_file(&after, p, n, fsize))
            fz_fail("a failed increment changed the file", NULL);
        break;
    }
    case 3:   /* forget */
        rc = file_forget(&fz_store, key, &err);
        if (rc < 0)
            fz_fail("forget failed", &err);
        present = fz_read(path, &after);
        if (!m.uncertain) {
            if (rc != (m.kind == M_LIVE))
                fz_fail("forget disagrees with the model", NULL);
            if (present != (m.kind == M_OTHER))
                fz_fail(present ? "forget left the entry" : "forget removed another key's entry", NULL);
        }
        break;
    case 4:   /* prune: removes expired or broken entries, keeps foreign files */
        if (file_prune(&fz_store, &err) != 0)
            fz_fail("prune failed", &err);
        present = fz_read(path, &after);
        if (!m.uncertain && present != (!m.magic || (m.intact && !fz_expired(&m))))
            fz_fail(present ? "prune kept an expired or broken entry"
                            : "prune removed a live entry or a foreign file", NULL);
        break;
    case 5:   /* flush "k": only intact entries whose key starts with it */
        if (file_flush(&fz_store, (cachy_slice){ "k", 1 }, &err) != 0)
            fz_fail("flush failed", &err);
        present = fz_read(path, &after);
        if (present != !(m.magic && m.intact && m.key.len >= 1 && m.key.ptr[0] == 'k'))
            fz_fail(present ? "flush kept an entry under its prefix"
                            : "flush removed what is not under its prefix", NULL);
        break;
    case 6:   /* flush all: everything with the magic */
        if (file_flush(&fz_store, (cachy_slice){ "", 0 }, &err) != 0)
            fz_fail("flush failed", &err);
        present = fz_read(path, &after);
        if (present != !m.magic)
            fz_fail(present ? "flush kept an entry" : "flush removed a foreign file", NULL);
        break;
    }
    fz_check_buffers(&out);

cleanup:
    /* Leave both directories empty for the next input. */
    fz_empty(fz_root);
    fz_empty(fz_out);
    cachy_buf_free(&out);
    cachy_buf_free(&after);
    free(p);
    return 0;
}
