#!/usr/bin/env python3
# fake_server.py MODE [REPLY]: a TCP server on a free 127.0.0.1 port that
# behaves the way a hung or broken server does, for the fault specs. Prints
# "PORT PID" on stdout (its own PID: `python3` may be a wrapper script), then
# serves until it is killed by that PID.
#   silent        accepts every connection and never reads or answers
#   reply REPLY   answers every request it reads with REPLY, given with
#                 Python escapes ("*3\r\n" for a 3-element array header)
#   hangup        reads the start of a request, closes its sending side,
#                 then resets the connection while the client is still
#                 writing: the client's next write fails with EPIPE, which
#                 raises SIGPIPE unless the writer asked not to
import codecs
import os
import socket
import struct
import sys
import threading
import time

mode = sys.argv[1]
reply = codecs.escape_decode(sys.argv[2])[0] if mode == "reply" else b""

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], os.getpid(), flush=True)
sys.stdout.close()


def answer(conn):
    with conn:
        while conn.recv(65536):
            conn.sendall(reply)


def hang_up(conn):
    conn.recv(65536)
    conn.shutdown(socket.SHUT_WR)
    time.sleep(0.2)
    # close with unread data and no lingering: the kernel answers with RST
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


held = []
while True:
    conn, _ = listener.accept()
    if mode == "silent":
        held.append(conn)   # open and unread: every request goes unanswered
    else:
        target = hang_up if mode == "hangup" else answer
        threading.Thread(target=target, args=(conn,), daemon=True).start()
