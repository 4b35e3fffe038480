#!/usr/bin/env python3
# spec/nginx/stall_client.py PORT REDIS_PID: the client side of
# spec/nginx/stall. Stops redis-server (SIGSTOP), sends 10 requests at
# once into cache:get on nginx's one worker while another thread asks the
# unrelated /ok every 20 ms, checks that /ok kept answering at once, that
# each get gave nil, err ("timed out") after about the store's 0.5 s
# timeout and that they waited together, not one after another; then
# continues redis-server (SIGCONT) and checks the next answers are right.
# Prints TAP lines ("ok N ...", "not ok N ...") and "# " lines with the
# figures.
import http.client
import os
import signal
import sys
import threading
import time

PORT, REDIS_PID = int(sys.argv[1]), int(sys.argv[2])
TIMEOUT = 0.5          # the store's timeout (stall.conf)
N = 10                 # requests waiting on the stopped server at once
OK_EVERY = 0.020       # /ok asked every 20 ms
OK_LIMIT = 0.050       # ... and must answer within 50 ms
EACH = (0.4, 1.0)      # each get's wall time (s)
ALL_WITHIN = 1.2       # all gets answered within this of the first send

n = 0
failed = 0


def result(ok, text, details=()):
    global n, failed
    n += 1
    print(("ok %d %s" if ok else "not ok %d %s") % (n, text))
    if not ok:
        failed += 1
        for d in details:
            print("#   " + d)
    sys.stdout.flush()


def get(path, conn=None):
    """(seconds, status, body) of one GET; a new connection unless given."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    t0 = time.monotonic()
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        status = resp.status
    except Exception as e:  # the figure of a failed request is the failure
        body, status = "%s: %s" % (type(e).__name__, e), 0
    took = time.monotonic() - t0
    if own:
        conn.close()
    return took, status, body


# ---- the value, written while the server runs --------------------------------
took, status, body = get("/put")
result(status == 200 and body.startswith("true"), "put while redis-server runs", [body])
took, status, body = get("/get")
result(body.startswith("the value\t"), "get while redis-server runs", [body])

# ---- the stall ------------------------------------------------------------------
ok_samples = []        # (start since t_start, seconds, status)
stop_polling = threading.Event()


def poll_ok():
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    nxt = time.monotonic()
    while not stop_polling.is_set():
        t = time.monotonic()
        took, status, body = get("/ok", conn)
        ok_samples.append((t, took, status == 200 and body == "ok\n"))
        if status == 0:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        nxt += OK_EVERY
        time.sleep(max(0.0, nxt - time.monotonic()))
    conn.close()


gets = [None] * N


def one_get(i):
    t = time.monotonic()
    took, status, body = get("/get")
    gets[i] = (t, took, t + took, status, body)


os.kill(REDIS_PID, signal.SIGSTOP)
try:
    poller = threading.Thread(target=poll_ok)
    poller.start()
    time.sleep(0.1)                          # /ok samples before the stall
    threads = [threading.Thread(target=one_get, args=(i,)) for i in range(N)]
    t_start = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t_end = time.monotonic()
    time.sleep(0.1)                          # and after
    stop_polling.set()
    poller.join()
finally:
    os.kill(REDIS_PID, signal.SIGCONT)

during = [s for s in ok_samples if t_start <= s[0] <= t_end]
worst = max((s[1] for s in ok_samples), default=float("inf"))
worst_during = max((s[1] for s in during), default=float("inf"))
print("# /ok while %d gets waited on the stopped redis-server: %d requests, every %d ms, "
      "slowest %.1f ms (%.1f ms over all %d requests)"
      % (N, len(during), OK_EVERY * 1000, worst_during * 1000, worst * 1000, len(ok_samples)))
print("# the %d gets, wall time each (s): %s; all answered %.3f s after the first was sent"
      % (N, " ".join("%.3f" % g[1] for g in sorted(gets, key=lambda g: g[1])), t_end - t_start))
print("# as nginx timed them (s): %s"
      % " ".join(sorted(g[4].split("\t")[3] if g[4].count("\t") >= 4 else "?" for g in gets)))
sys.stdout.flush()

result(len(during) >= int((t_end - t_start) / OK_EVERY) // 2 and all(s[2] for s in ok_samples),
       "/ok answered 'ok' every time while the gets waited (%d requests during the stall)" % len(during),
       ["%d requests during the stall; failures: %s" % (len(during),
        [s for s in ok_samples if not s[2]][:3])])
result(worst <= OK_LIMIT,
       "/ok answered within %d ms throughout (slowest %.1f ms)" % (OK_LIMIT * 1000, worst * 1000),
       ["slowest: %s" % sorted((round(s[1] * 1000, 1) for s in ok_samples), reverse=True)[:5]])

bad = []
for i, (t, took, end, status, body) in enumerate(gets):
    f = body.rstrip("\n").split("\t")
    if not (status == 200 and len(f) == 5 and f[0] == "nil" and "timed out" in f[1]
            and f[2] == "timeout" and f[4] == "cosocket"):
        bad.append("request %d: status %d, %r" % (i + 1, status, body[:300]))
result(not bad, "each of the %d gets gave nil, err (\"timed out\", code \"timeout\") on the cosocket transport" % N,
       bad[:5])
if gets and gets[0][4].count("\t") >= 4:
    print("# the error: " + gets[0][4].split("\t")[1])
slow = [g[1] for g in gets if not (EACH[0] <= g[1] <= EACH[1])]
result(not slow, "each get took %.1f to %.1f s (the timeout is %.1f s)" % (EACH[0], EACH[1], TIMEOUT),
       ["outside: %s" % ["%.3f" % s for s in slow]])
result(t_end - t_start <= ALL_WITHIN,
       "all %d answered within %.1f s of the first send (they waited together: %.3f s)"
       % (N, ALL_WITHIN, t_end - t_start))

# ---- after SIGCONT ------------------------------------------------------------
took, status, body = get("/get")
result(body.startswith("the value\t") and took < 0.5,
       "after SIGCONT the next get reads the value (%.1f ms)" % (took * 1000), [body])
after = [None] * N
ths = [threading.Thread(target=lambda i=i: after.__setitem__(i, get("/get"))) for i in range(N)]
for th in ths:
    th.start()
for th in ths:
    th.join()
wrong = [a for a in after if not a[2].startswith("the value\t")]
result(not wrong, "after SIGCONT %d gets at once read the value" % N, [repr(w) for w in wrong[:3]])
took, status, body = get("/put")
result(body.startswith("true"), "after SIGCONT a put succeeds", [body])

sys.exit(1 if failed else 0)
