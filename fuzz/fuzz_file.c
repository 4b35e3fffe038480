/*
 * fuzz_file.c: libFuzzer harness for the file store's entry parser
 * (entry_read and head_read in csrc/store_file.c, included here so that its
 * static functions are reachable without changing the driver).
 *
 * The input's first byte is a control byte, the rest is planted as the
 * entry file of a key; then one store operation runs on it:
 *
 *   bit 0   make the length fields agree with the file's size
 *   bit 1   write the right checksum into the trailer
 *   bit 2   look the entry up by the key stored in it (else by "k")
 *   bits 3-5  get, add, increment, forget, prune, flush "k", flush all, get
 *   bits 6-7  increment by 1, -1, INT64_MAX, INT64_MIN
 *
 * Bits 0-2 let the fuzzer past the checksum and the key comparison to the
 * payload. The result and the file left behind are checked against the
 * format the driver's header comment documents (a model written here):
 * a live entry is read back exactly, anything else with the magic is a
 * miss and removed, a file without the magic survives prune and flush.
 *
 * Files go under $CACHY_FUZZ_DIR, or a fresh directory in /dev/shm (else
 * /tmp) removed at exit.
 */
#include "../csrc/store_file.c"

#include <inttypes.h>

static cachy_store fz_store;
static char fz_root[4096];
static int fz_root_owned;

static void fz_fail(const char *what, const cachy_error *err)
{
    fprintf(stderr, "fuzz_file: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    abort();
}

static void fz_cleanup(void)
{
    cachy_error err;
    if (fz_store.impl != NULL) {
        file_flush(&fz_store, (cachy_slice){ "", 0 }, &err);
        file_close(&fz_store);
    }
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

static model fz_model(const unsigned char *p, size_t n, cachy_slice key)
{
    model m = { M_STALE, 0, 0, 0, { NULL, 0 }, { NULL, 0 }, 0 };
    uint64_t klen, plen;
    int64_t now;
    m.magic = n >= MAGIC_LEN && memcmp(p, MAGIC, MAGIC_LEN) == 0;
    if (!m.magic || n < HEADER_LEN || p[6] != FORMAT_VERSION || p[7] != 0)
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

static void fz_write(const char *dir1, const char *dir2, const char *path, const void *p, size_t n)
{
    int fd;
    mkdir(dir1, 0700);
    mkdir(dir2, 0700);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, p, n) != 0 || close(fd) != 0)
        fz_fail("cannot plant the entry file", NULL);
}

/* The file's content into b; 0 if there is no file. */
static int fz_read(const char *path, cachy_buf *b)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    b->len = 0;
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) != 0 || cachy_buf_reserve(b, (size_t)st.st_size + 1) != 0 ||
        read_at(fd, b->data, (size_t)st.st_size, 0) != st.st_size)
        fz_fail("cannot read the entry file back", NULL);
    b->len = (size_t)st.st_size;
    close(fd);
    return 1;
}

static int fz_same(const cachy_buf *b, const void *p, size_t n)
{
    return b->len == n && (n == 0 || memcmp(b->data, p, n) == 0);
}

/* After a write, the file must be a live entry of key holding val. */
static void fz_expect_entry(const char *path, cachy_slice key, cachy_slice val, int64_t expiry,
                            cachy_buf *b)
{
    model m;
    if (!fz_read(path, b))
        fz_fail("a write left no file", NULL);
    m = fz_model((const unsigned char *)b->data, b->len, key);
    if (m.kind != M_LIVE || m.expiry != expiry || m.payload.len != val.len ||
        memcmp(m.payload.ptr, val.ptr, val.len) != 0)
        fz_fail("a write left a file that is not the entry written", NULL);
}

/* ---- one input --------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t steps[4] = { 1, -1, INT64_MAX, INT64_MIN };
    char hex[HEX_LEN + 1], dir1[4200], dir2[4200], path[4200], tmp[4200];
    unsigned char *p;
    size_t n;
    unsigned ctl;
    cachy_slice key = { "k", 1 };
    cachy_buf out = { 0 }, after = { 0 };
    cachy_error err;
    model m;
    int rc, present;

    if (size < 1)
        return 0;
    ctl = data[0];
    n = size - 1;
    p = malloc(n + 1);
    if (p == NULL)
        return 0;
    memcpy(p, data + 1, n);

    if ((ctl & 1) && n >= HEADER_LEN + TRAILER_LEN) {
        uint64_t klen = get32(p + 16);
        if (klen <= n - HEADER_LEN - TRAILER_LEN)
            put64(p + 20, n - HEADER_LEN - TRAILER_LEN - klen);
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

    cachy_hash128_hex(key.ptr, key.len, hex);
    fz_paths(hex, dir1, dir2, path, tmp);
    fz_write(dir1, dir2, path, p, n);
    m = fz_model(p, n, key);

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
        else if (!fz_read(path, &after) || !fz_same(&after, p, n))
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
        if (!fz_read(path, &after) || !fz_same(&after, p, n))
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

    /* Leave the directory empty for the next input. */
    unlink(path);
    unlink(tmp);
    rmdir(dir2);
    rmdir(dir1);
    cachy_buf_free(&out);
    cachy_buf_free(&after);
    free(p);
    return 0;
}
