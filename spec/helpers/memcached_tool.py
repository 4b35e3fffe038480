#!/usr/bin/env python3
"""spec/helpers/memcached_tool.py: what the memcached specs need to see or do
beside the store itself, through memcached's text protocol (as another
client would):

  items PORT            curr_items of that server
  ttl PORT KEY          remaining lifetime in seconds ("-1": none, "miss")
  keys PORT             every key the server holds, one per line, as
                        memcached's metadump writes it (URL-encoded)
  raw PORT TEXT         sends TEXT (\\r and \\n written as such) and prints
                        the reply line(s) up to the first status line
  listen MODE PORTFILE  a listener that never answers: writes its port to
                        PORTFILE and waits to be killed. MODE "silent"
                        accepts connections and reads nothing; "full" keeps
                        its accept queue full, so new connections hang in
                        connect
"""
import os
import socket
import sys
import time

STATUS = (b"END", b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED",
          b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR", b"OK", b"TOUCHED",
          b"EN", b"HD", b"NF", b"NS", b"EX")


def connect(port):
    return socket.create_connection(("127.0.0.1", int(port)), 2)


def reply(sock):
    """The reply's lines, up to and including its last one: a status line, a
    number (incr/decr), or a meta VA line with its data line."""
    buf = b""
    while True:
        complete = buf.split(b"\r\n")[:-1]
        out = []
        i = 0
        while i < len(complete):
            line = complete[i]
            word = line.split(b" ", 1)[0]
            out.append(line)
            if word in (b"VA", b"VALUE"):
                if i + 1 == len(complete):
                    break
                out.append(complete[i + 1])
                if word == b"VA":
                    return out
                i += 2
                continue
            if word in STATUS or line.isdigit():
                return out
            i += 1
        chunk = sock.recv(65536)
        if not chunk:
            return out
        buf += chunk


def command(port, text):
    s = connect(port)
    s.sendall(text)
    out = reply(s)
    s.close()
    return out


def main():
    what = sys.argv[1]
    if what == "items":
        for line in command(sys.argv[2], b"stats\r\n"):
            parts = line.split(b" ")
            if len(parts) == 3 and parts[1] == b"curr_items":
                print(int(parts[2]))
    elif what == "ttl":
        key = sys.argv[3].encode("latin-1")
        out = command(sys.argv[2], b"mg " + key + b" t\r\n")
        head = out[0].split(b" ")
        if head[0] == b"EN":
            print("miss")
        else:
            for flag in head[1:]:
                if flag.startswith(b"t"):
                    print(int(flag[1:]))
    elif what == "keys":
        s = connect(sys.argv[2])
        s.sendall(b"lru_crawler metadump all\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        for line in buf.split(b"\n"):
            if line.startswith(b"key="):
                sys.stdout.write(line.split(b" ")[0][4:].decode("ascii") + "\n")
    elif what == "raw":
        text = sys.argv[3].replace("\\r", "\r").replace("\\n", "\n").encode("latin-1")
        for line in command(sys.argv[2], text):
            sys.stdout.write(line.decode("latin-1") + "\n")
    elif what == "listen":
        mode, portfile = sys.argv[2], sys.argv[3]
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        port = srv.getsockname()[1]
        held = []
        if mode == "full":
            # backlog 0 takes one pending connection; fill it and never accept
            srv.listen(0)
            for _ in range(3):
                c = socket.socket()
                c.setblocking(False)
                try:
                    c.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                held.append(c)
            time.sleep(0.2)
        else:
            srv.listen(64)
        with open(portfile + ".tmp", "w") as f:
            f.write(str(port))
        os.rename(portfile + ".tmp", portfile)
        while True:
            if mode == "silent":
                conn, _ = srv.accept()
                held.append(conn)
            else:
                time.sleep(3600)
    else:
        sys.exit("unknown command " + what)


if __name__ == "__main__":
    main()
