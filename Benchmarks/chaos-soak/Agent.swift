// The programs chaos-soak starts inside the lab: the probe agent each host's container runs, and
// the page the service's tasks serve.

/// The probe agent (`python3 agent.py ME PEERS OUT`): serves a TCP echo on port 7000 and probes,
/// each stream in a thread of its own every half second (so one stream's timeouts never delay
/// another's next try), of every peer the file PEERS names (rewritten by chaos-soak as hosts leave
/// and come back): its name `c-hN` (an A query to 127.0.0.11, 1 s timeout, not the libc resolver's
/// 5 s retries), then a 16 KiB echo to that address on the plain network; the same by
/// `c-hN.secret` on the encrypted one; a page through the service's VIP (`web:8000`); and a page
/// through the routing mesh of every host (`198.18.0.N:8080`). Each result is a JSON line in OUT:
/// `{"t": completion time, "k": kind, "to": target, "ok": bool}`, and for a failure `"e"`: what
/// failed (`dns: no answer`, `dns: timeout`, `timeout`, `short echo`, or the exception's type and
/// text, e.g. `ConnectionRefusedError: [Errno 111] Connection refused`). The VIP probe
/// resolves `web` the same way (not through libc, whose lost query costs 5 s) and asks the VIP.
let agentSource = #"""
import json, random, socket, struct, sys, threading, time, urllib.request
me, peers_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
payload = bytes(range(256)) * 64
lock = threading.Lock()
f = open(out, "a", buffering=1)

def put(kind, to, ok, err=None):
    r = {"t": time.time(), "k": kind, "to": to, "ok": ok}
    if not ok and err:
        r["e"] = err
    with lock:
        f.write(json.dumps(r) + "\n")

def why(e):
    if isinstance(e, socket.timeout) or "timed out" in str(e):
        return "timeout"
    return (type(e).__name__ + ": " + str(e))[:80]

def peers():
    try:
        with open(peers_file) as p:
            return json.load(p)
    except Exception:
        return {"hosts": [], "mesh": []}

def echo(c):
    c.settimeout(5)
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    finally:
        c.close()

def serve():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 7000))
    srv.listen(128)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()

def skip_name(d, i):
    # Labels, ended by a zero byte or by a compression pointer (which may follow labels).
    while True:
        if d[i] & 0xC0 == 0xC0:
            return i + 2
        if d[i] == 0:
            return i + 1
        i += 1 + d[i]

def resolve(name):
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    try:
        s.sendto(q, ("127.0.0.11", 53))
        d = s.recv(4096)
    finally:
        s.close()
    rid, flags, qd, an = struct.unpack(">HHHH", d[:8])
    if rid != qid or flags & 0xF != 0 or an == 0:
        return None
    i = 12
    for _ in range(qd):
        i = skip_name(d, i) + 4
    for _ in range(an):
        i = skip_name(d, i)
        rtype, _, _, rdlen = struct.unpack(">HHIH", d[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            return socket.inet_ntoa(d[i:i + 4])
        i += rdlen
    return None

def transfer(addr):
    s = socket.create_connection((addr, 7000), timeout=1)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while len(got) < len(payload):
            d = s.recv(65536)
            if not d:
                break
            got += d
        return bytes(got) == payload
    finally:
        s.close()

def page(url):
    with urllib.request.urlopen(url, timeout=1) as r:
        if r.status == 200 and b"chaos" in r.read():
            return None
        return "wrong page (status %d)" % r.status

def lookup(name):
    # The address, or None and what failed.
    try:
        addr = resolve(name)
    except Exception as e:
        return None, "dns: " + why(e)
    return addr, None if addr else "dns: no answer"

def echoed(addr):
    # Whether the echo came back whole, and what failed.
    try:
        return (True, None) if transfer(addr) else (False, "short echo")
    except Exception as e:
        return False, why(e)

def named(peer):
    if peer not in peers()["hosts"]:
        return
    addr, err = lookup("c-" + peer)
    put("dns", peer, addr is not None, err)
    ok = False
    if addr:
        ok, err = echoed(addr)
    put("plain", peer, ok, err)

def secret(peer):
    if peer not in peers()["hosts"]:
        return
    addr, err = lookup("c-" + peer + ".secret")
    ok = False
    if addr:
        ok, err = echoed(addr)
    put("secret", peer, ok, err)

def vip():
    addr, err = lookup("web")
    if addr:
        try:
            err = page("http://%s:8000/" % addr)
        except Exception as e:
            err = why(e)
    put("vip", "web", err is None, err)

def mesh(host, address):
    err = None
    try:
        err = page("http://%s:8080/" % address)
    except Exception as e:
        err = why(e)
    put("mesh", host, err is None, err)

def every(fn, *args):
    while True:
        started = time.time()
        fn(*args)
        time.sleep(max(0.05, 0.5 - (time.time() - started)))

threading.Thread(target=serve, daemon=True).start()
time.sleep(0.5)
for peer in ["h%d" % n for n in range(1, 6)]:
    if peer != me:
        threading.Thread(target=every, args=(named, peer), daemon=True).start()
        threading.Thread(target=every, args=(secret, peer), daemon=True).start()
threading.Thread(target=every, args=(vip,), daemon=True).start()
for host, address in peers()["mesh"]:
    threading.Thread(target=every, args=(mesh, host, address), daemon=True).start()
while True:
    time.sleep(3600)
"""#

/// The service's page: what the VIP and mesh probes look for.
let pageSource = "<html><body>chaos</body></html>\n"
