#!/usr/bin/env python3
# silent_listener.py: a TCP server on a free 127.0.0.1 port that accepts every
# connection and never answers (what a hung server looks like to a client).
# Prints the port, then runs until it is killed by PID.
import socket
import sys

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
sys.stdout.close()
held = []
while True:
    conn, _ = listener.accept()
    held.append(conn)   # kept open and never read: requests go unanswered
