#!/usr/bin/env python3
"""A fake Kubernetes API server: a test fixture for nftproxy's list+watch client.

Speaks the real protocol over HTTPS (client-cert or bearer-token auth) for Services,
EndpointSlices and Nodes: lists with labelSelector/fieldSelector and limit/continue paging,
chunked watch streams with BOOKMARKs and 410 "too old resource version" errors. A plain-HTTP
control port lets tests change objects and inject faults. Python stdlib + the openssl CLI;
PyYAML is used for YAML input when installed. See README.md beside this file.
"""

import argparse, base64, collections, copy, json, os, re, shutil, signal, socket, socketserver
import secrets, ssl, subprocess, sys, tempfile, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    import yaml
except ImportError:  # JSON input still works
    yaml = None

RESOURCES = {  # resource -> (kind, apiVersion, path prefix, namespaced)
    "services": ("Service", "v1", "/api/v1", True),
    "endpointslices": ("EndpointSlice", "discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1", True),
    "nodes": ("Node", "v1", "/api/v1", False),
}
KIND_TO_RES = {v[0]: k for k, v in RESOURCES.items()}
PATH_RE = re.compile(r"^(/api/v1|/apis/discovery\.k8s\.io/v1)(?:/namespaces/([^/]+))?/([a-z]+)(?:/([^/]+))?/?$")
REASONS = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
           410: "Expired", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
           504: "Timeout"}
CHUNK_OVER = 2048  # like Go's net/http: bodies larger than this go out chunked, smaller with Content-Length
FX = None          # the one Fixture, set in main()


def status(code, message, reason=None, details=None):
    """A metav1.Status object as the API server returns it for errors."""
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason or REASONS.get(code, "InternalError"), "code": code}
    if details is not None:
        s["details"] = details
    return s


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------- selectors
TERM_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")
FIELD_RE = re.compile(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(\S*)\s*$")


def parse_label_selector(text):
    """'!a,b=c,d!=e,f,g in (x,y),h notin (z)' -> list of (key, op, values). Raises ValueError."""
    reqs = []
    for term in re.findall(r"(?:[^,(]|\([^)]*\))+", text or ""):
        m = TERM_RE.match(term)
        if not m or (m.group(1) and (m.group(3) or m.group(5))):
            raise ValueError(f"unable to parse requirement: {term.strip()!r}")
        neg, key, op, val, setop, setvals = m.groups()
        if neg:
            reqs.append((key, "!", None))
        elif op:
            reqs.append((key, "!=" if op == "!=" else "=", val))
        elif setop:
            reqs.append((key, setop, {v.strip() for v in setvals.split(",")}))
        else:
            reqs.append((key, "exists", None))
    return reqs


def label_matches(reqs, labels):
    for key, op, val in reqs:
        have = labels.get(key)
        if op == "!":
            ok = key not in labels
        elif op == "exists":
            ok = key in labels
        elif op in ("=", "!="):
            ok = (key in labels and have == val) == (op == "=")  # != also matches an absent label
        else:
            ok = (key in labels and have in val) == (op == "in")  # notin too
        if not ok:
            return False
    return True


def parse_field_selector(text):
    """Only metadata.name / metadata.namespace, as for these resources on a real server."""
    reqs = []
    for term in filter(str.strip, (text or "").split(",")):
        m = FIELD_RE.match(term)
        if not m:
            raise ValueError(f"invalid field selector: {term!r}")
        if m.group(1) not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f"field label not supported: {m.group(1)}")
        reqs.append((m.group(1).split(".")[1], m.group(2) != "!=", m.group(3)))
    return reqs


class Filter:
    """Namespace (from the path) + labelSelector + fieldSelector of one request."""

    def __init__(self, ns, q):
        self.ns = ns
        self.labels = parse_label_selector(q.get("labelSelector", ""))
        self.fields = parse_field_selector(q.get("fieldSelector", ""))
        self.selective = bool(self.labels or self.fields)

    def __call__(self, obj):
        md = obj.get("metadata", {})
        if self.ns is not None and md.get("namespace") != self.ns:
            return False
        if any((md.get(f, "") == v) != eq for f, eq, v in self.fields):
            return False
        return label_matches(self.labels, md.get("labels") or {})


# ---------------------------------------------------------------- object store + history
def obj_key(obj):
    md = obj["metadata"]
    return f"{md.get('namespace', '')}/{md['name']}"


class Store:
    """Objects, a global resourceVersion counter and the event history watches replay from.

    Every change increments rv by one and appends one history entry, so history[i] has
    resourceVersion floor+1+i; a watch from RV r can be served iff r >= floor."""

    def __init__(self, history_size, first_rv):
        self.cond = threading.Condition()
        self.objects = {}     # (resource, namespace, name) -> object
        self.rv = self.floor = first_rv - 1
        self.history = []     # (type, resource, object, previous object)
        self.history_size = history_size
        self.snapshots = collections.OrderedDict()  # (resource, rv) -> sorted items, for continue

    def _record(self, typ, res, obj, prev):
        self.history.append((typ, res, obj, prev))
        excess = len(self.history) - self.history_size
        if excess > 0:
            del self.history[:excess]
            self.floor += excess
        self.cond.notify_all()

    @staticmethod
    def identify(obj):
        if not isinstance(obj, dict) or obj.get("kind") not in KIND_TO_RES:
            raise ValueError(f"unsupported object kind: {obj.get('kind') if isinstance(obj, dict) else obj!r}")
        res = KIND_TO_RES[obj["kind"]]
        md = obj.setdefault("metadata", {})
        if not md.get("name"):
            raise ValueError(f"{obj['kind']} without metadata.name")
        if RESOURCES[res][3]:
            md.setdefault("namespace", "default")
        else:
            md.pop("namespace", None)
        return res, md.get("namespace", ""), md["name"]

    def apply(self, obj):
        """Create or replace; returns (event type, stored object)."""
        obj = copy.deepcopy(obj)
        res, ns, name = self.identify(obj)
        obj.pop("apiVersion", None)
        obj = {"kind": obj.pop("kind"), "apiVersion": RESOURCES[res][1], **obj}  # those two first, as usual
        md = obj["metadata"]
        with self.cond:
            old = self.objects.get((res, ns, name))
            self.rv += 1
            md["resourceVersion"] = str(self.rv)
            for field, default in (("uid", lambda: str(uuid.uuid4())), ("creationTimestamp", now_rfc3339)):
                md[field] = old["metadata"][field] if old else md.get(field) or default()
            self.objects[(res, ns, name)] = obj
            self._record("MODIFIED" if old else "ADDED", res, obj, old)
            return ("MODIFIED" if old else "ADDED"), obj

    def delete(self, res, ns, name):
        with self.cond:
            old = self.objects.pop((res, ns, name), None)
            if old is None:
                return None
            self.rv += 1
            gone = copy.deepcopy(old)  # DELETED carries the last state with the deletion's RV
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self._record("DELETED", res, gone, old)
            return gone

    def compact(self):
        with self.cond:
            self.history.clear()
            self.floor = self.rv
            self.snapshots.clear()  # continue tokens from before now get 410 too
            self.cond.notify_all()

    def current(self, res):  # call with cond held
        return sorted((o for (r, _, _), o in self.objects.items() if r == res), key=obj_key)


# ---------------------------------------------------------------- fixture state
class Watcher:
    def __init__(self, sock):
        self.sock, self.dropped = sock, False


def raw_shutdown(sock):
    """Shut the TCP connection under a (TLS) socket from another thread: the peer sees EOF
    in the middle of whatever it was reading (no TLS close_notify, no final chunk)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Fixture:
    def __init__(self, args):
        self.args = args
        self.store = Store(args.history_size, args.first_resource_version)
        self.lock = threading.Lock()
        self.tokens = set(args.token)
        self.failures = collections.deque()   # status codes for the next N API requests
        self.stall_until = 0.0                # time.monotonic() until which watches send nothing
        self.watchers, self.conns = set(), set()
        self.port, self.api, self.files = args.port, None, {}
        self.stats = {"requests": 0, "unauthorized": 0, "injected_failures": 0,
                      "resources": {r: {"list": 0, "watch": 0, "get": 0} for r in RESOURCES},
                      "recent": collections.deque(maxlen=200)}

    # -- TLS listener (restartable for outages)
    def start_api(self):
        srv = Server(("127.0.0.1", self.port), ApiHandler)
        srv.socket = self.ssl_ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        self.port, self.api = srv.server_address[1], srv
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def drop_watches(self):
        with self.lock:
            victims = list(self.watchers)
        for w in victims:
            w.dropped = True
            raw_shutdown(w.sock)
        with self.store.cond:
            self.store.cond.notify_all()
        return len(victims)

    def outage(self, seconds):
        """Close the listener and every open connection now; listen again after `seconds`."""
        if self.api is None:
            raise ValueError("an outage is already going on")
        self.api, srv = None, self.api
        srv.shutdown()
        srv.server_close()
        self.drop_watches()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            raw_shutdown(c)
        timer = threading.Timer(seconds, self.start_api)
        timer.daemon = True
        timer.start()

    def take_failure(self):
        with self.lock:
            if self.failures:
                self.stats["injected_failures"] += 1
                return self.failures.popleft()
        return None

    def count(self, res, verb):
        with self.lock:
            self.stats["resources"][res][verb] += 1

    def snapshot_stats(self):
        with self.lock:
            s = copy.deepcopy({k: v for k, v in self.stats.items() if k != "recent"})
            s["recent"] = list(self.stats["recent"])
            s["open_watches"] = len(self.watchers)
            s["open_connections"] = len(self.conns)
        s["resourceVersion"], s["oldestWatchableResourceVersion"] = str(self.store.rv), str(self.store.floor)
        return s

    def kubeconfig(self, auth="cert", style="data"):
        """A kubeconfig as kubectl writes it: *-data (base64) fields, or file paths."""
        def field(name, path):
            if style == "data":
                return f"    {name}-data: {base64.b64encode(open(path, 'rb').read()).decode()}\n"
            return f"    {name}: {json.dumps(path)}\n"
        if auth == "cert":
            if not (self.files.get("client.crt") and self.files.get("client.key")):
                raise ValueError("no client certificate in --cert-dir for a client-cert kubeconfig")
            user = field("client-certificate", self.files["client.crt"]) + field("client-key", self.files["client.key"])
        elif auth == "token":
            user = (f"    token: {json.dumps(sorted(self.tokens)[0])}\n" if style == "data"
                    else f"    tokenFile: {json.dumps(self.files['token'])}\n")
        else:
            raise ValueError("auth must be cert or token")
        return ("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
                + field("certificate-authority", self.files["ca.crt"])
                + f"    server: https://127.0.0.1:{self.port}\n  name: fake\n"
                "contexts:\n- context:\n    cluster: fake\n    user: nftproxy\n  name: fake\n"
                "current-context: fake\npreferences: {}\nusers:\n- name: nftproxy\n  user:\n" + user)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):  # skip HTTPServer's getfqdn() reverse lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        if not isinstance(e, (OSError, ssl.SSLError)):  # connection trouble is routine here
            super().handle_error(request, client_address)


# ---------------------------------------------------------------- the API (HTTPS)
class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "fake-apiserver"
    user = "-"

    def setup(self):
        self.request.settimeout(10)
        self.request.do_handshake()  # here, not in the accept loop: a slow client blocks no one
        self.request.settimeout(None)
        with FX.lock:
            FX.conns.add(self.request)
        super().setup()

    def finish(self):
        with FX.lock:
            FX.conns.discard(self.request)
        try:
            super().finish()
        except OSError:
            pass

    def log_request(self, code="-", size="-"):
        with FX.lock:
            FX.stats["requests"] += 1
            FX.stats["recent"].append({"method": self.command, "path": self.path, "code": int(code), "user": self.user})
        if not FX.args.quiet:
            sys.stderr.write(f"fake-apiserver: {self.user} {self.command} {self.path} {code}\n")

    def log_message(self, fmt, *args):
        if not FX.args.quiet:
            sys.stderr.write("fake-apiserver: " + (fmt % args) + "\n")

    def authenticate(self):
        cert = self.request.getpeercert()  # only a cert that verified against the client CA
        if cert:
            self.user = dict(x[0] for x in cert.get("subject", ())).get("commonName", "?")
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip() in FX.tokens:
            self.user = "token"
            return True
        return False

    def send_json(self, code, obj, headers=None):
        body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if len(body) > CHUNK_OVER:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 4096):
                self.chunk(body[i:i + 4096])
            self.chunk(b"")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        if not self.authenticate():
            with FX.lock:
                FX.stats["unauthorized"] += 1
            return self.send_json(401, status(401, "Unauthorized"))
        code = FX.take_failure()
        if code:
            hdrs = {"Retry-After": "1"} if code in (429, 503) else None
            return self.send_json(code, status(code, f"injected failure ({code})"), hdrs)
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        if u.path in ("/healthz", "/livez", "/readyz"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", "2")
            self.end_headers()
            return self.wfile.write(b"ok")
        if u.path == "/version":
            return self.send_json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake-apiserver"})
        m = PATH_RE.match(u.path)
        res = m and m.group(3)
        if not m or res not in RESOURCES or RESOURCES[res][2] != m.group(1) \
                or (m.group(2) and not RESOURCES[res][3]) or (m.group(4) and RESOURCES[res][3] and not m.group(2)):
            return self.send_json(404, status(404, "the server could not find the requested resource", details={}))
        ns, name = m.group(2), m.group(4)
        if name:
            FX.count(res, "get")
            obj = FX.store.objects.get((res, ns or "", name))
            if obj is None:
                return self.send_json(404, status(404, f'{res} "{name}" not found', details={"name": name, "kind": res}))
            return self.send_json(200, obj)
        try:
            flt = Filter(ns, q)
            if q.get("watch") in ("1", "true"):
                return self.watch(res, flt, q)
            return self.list(res, flt, q)
        except ValueError as e:
            return self.send_json(400, status(400, str(e)))

    def do_other(self):
        if not self.authenticate():
            return self.send_json(401, status(401, "Unauthorized"))
        self.send_json(405, status(405, "this fixture is read-only; use the control port"))

    do_POST = do_PUT = do_PATCH = do_DELETE = do_other

    # -- list with limit/continue
    def list(self, res, flt, q):
        FX.count(res, "list")
        limit = int(q.get("limit") or 0)
        st = FX.store
        with st.cond:
            if q.get("continue"):
                try:
                    tok = json.loads(base64.urlsafe_b64decode(q["continue"] + "=" * (-len(q["continue"]) % 4)))
                    rv, start = int(tok["rv"]), tok["start"]
                except (ValueError, KeyError, TypeError):
                    raise ValueError("continue key is not valid")
                items = st.snapshots.get((res, rv))  # None once compacted or evicted
            else:
                rv, start, items = st.rv, "", st.current(res)
        if items is None:
            return self.send_json(410, status(410, "The provided continue parameter is too old to display a "
                                                   "consistent list result. You can start a new list without "
                                                   "the continue parameter."))
        matched = [o for o in items if obj_key(o) > start and flt(o)]
        page = matched[:limit] if limit > 0 else matched
        md = {"resourceVersion": str(rv)}
        if limit > 0 and len(matched) > limit:
            tok = {"v": "meta.k8s.io/v1", "rv": rv, "start": obj_key(page[-1])}
            md["continue"] = base64.urlsafe_b64encode(json.dumps(tok).encode()).decode().rstrip("=")
            if not flt.selective:
                md["remainingItemCount"] = len(matched) - limit
            with st.cond:  # keep the snapshot for the next pages (at most 64 lists in flight)
                st.snapshots[(res, rv)] = items
                while len(st.snapshots) > 64:
                    st.snapshots.popitem(last=False)
        kind, api_version = RESOURCES[res][:2]
        # List items carry no kind/apiVersion, as on a real server.
        self.send_json(200, {"kind": kind + "List", "apiVersion": api_version, "metadata": md,
                             "items": [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in page]})

    # -- watch
    def event(self, typ, obj):
        self.chunk(json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n")

    def bookmark(self, res, rv, initial_end=False):
        md = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        self.event("BOOKMARK", {"kind": RESOURCES[res][0], "apiVersion": RESOURCES[res][1], "metadata": md})

    @staticmethod
    def convert(entry, flt):
        """History entry -> (type, object) as this watch's selector sees it, or None."""
        typ, _, obj, prev = entry
        now, before = flt(obj), prev is not None and typ == "MODIFIED" and flt(prev)
        if typ == "MODIFIED" and now != before:  # object moved into / out of the selection
            if now:
                return "ADDED", obj
            gone = copy.deepcopy(prev)
            gone["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
            return "DELETED", gone
        return (typ, obj) if now else None

    def watch(self, res, flt, q):
        FX.count(res, "watch")
        rv_param = q.get("resourceVersion", "")
        timeout = float(q.get("timeoutSeconds") or FX.args.watch_timeout)
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        initial = q.get("sendInitialEvents") == "true"
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise ValueError(f"invalid resource version: {rv_param}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        st, w, out = FX.store, Watcher(self.request), []
        with st.cond:
            if rv_param in ("", "0") or initial:  # "get state and start": synthetic ADDED for all
                out = [("ADDED", o) for o in st.current(res) if flt(o)]
                pos = st.rv
            else:
                pos = int(rv_param)
        with FX.lock:
            FX.watchers.add(w)
        try:
            for typ, obj in out:
                self.event(typ, obj)
            if initial and bookmarks:
                self.bookmark(res, pos, initial_end=True)
            deadline = time.monotonic() + timeout
            interval = FX.args.bookmark_interval
            next_bm = time.monotonic() + interval if bookmarks and interval > 0 else float("inf")
            while True:
                with st.cond:
                    while True:
                        now = time.monotonic()
                        if w.dropped:
                            self.close_connection = True
                            return
                        if FX.stall_until > now:
                            st.cond.wait(FX.stall_until - now)
                            continue
                        if pos < st.floor or st.rv > pos or now >= min(deadline, next_bm):
                            break
                        st.cond.wait(min(deadline, next_bm) - now)
                    if pos < st.floor:  # history this watch still needs is gone
                        msg = f"too old resource version: {pos} ({st.floor})"
                        pending, top = None, pos
                    else:
                        pending, top = st.history[pos - st.floor:], max(st.rv, pos)  # pos > rv: wait for it
                if pending is None:
                    self.event("ERROR", status(410, msg, reason="Expired"))
                    break
                for entry in pending:
                    ev = entry[1] == res and self.convert(entry, flt)
                    if ev:
                        self.event(*ev)
                pos = top
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= next_bm:
                    self.bookmark(res, pos)
                    next_bm = now + interval
            self.chunk(b"")  # a clean end of the chunked body
        except (OSError, ssl.SSLError):
            self.close_connection = True
        finally:
            with FX.lock:
                FX.watchers.discard(w)


# ---------------------------------------------------------------- the control port (plain HTTP)
def parse_objects(text):
    """JSON (one or several concatenated documents) or multi-doc YAML; arrays and *List
    objects are flattened into their items."""
    docs, text = [], text.strip()
    try:
        dec, i = json.JSONDecoder(), 0
        while i < len(text):
            obj, i = dec.raw_decode(text, i)
            docs.append(obj)
            i = len(text) - len(text[i:].lstrip())
    except ValueError:
        if yaml is None:
            raise ValueError("input is not JSON and PyYAML is not installed")
        iso = lambda o: o.isoformat().replace("+00:00", "Z") if hasattr(o, "isoformat") else str(o)
        docs = json.loads(json.dumps(list(yaml.safe_load_all(text)), default=iso))
    out = []
    for d in docs:
        if isinstance(d, list):
            out.extend(d)
        elif isinstance(d, dict) and d.get("kind", "").endswith("List") and "items" in d:
            out.extend(d["items"])
        elif d is not None:
            out.append(d)
    return out


def served_objects(objs):
    """Split into objects of the served kinds and a count of the others (Pods, ServiceCIDRs...),
    so that a whole `kubectl get -o yaml` dump can be loaded."""
    ours = [o for o in objs if isinstance(o, dict) and o.get("kind") in KIND_TO_RES]
    return ours, dict(collections.Counter(str(o.get("kind") if isinstance(o, dict) else o) for o in objs
                                          if not (isinstance(o, dict) and o.get("kind") in KIND_TO_RES)))


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, obj):
        body = (json.dumps(obj, indent=1) + "\n").encode() if not isinstance(obj, str) else obj.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if not isinstance(obj, str) else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        fn = getattr(self, f"{method}_{u.path.strip('/').replace('-', '_')}", None)
        if fn is None:
            return self.reply(404, {"error": f"no control command {method} {u.path}"})
        try:
            self.reply(200, fn(q, body))
        except (ValueError, KeyError, OSError) as e:
            self.reply(400, {"error": str(e)})

    def GET_stats(self, q, body):
        return FX.snapshot_stats()

    def POST_reset_stats(self, q, body):
        with FX.lock:
            for counts in FX.stats["resources"].values():
                counts.update(list=0, watch=0, get=0)
            FX.stats.update(requests=0, unauthorized=0, injected_failures=0)
            FX.stats["recent"].clear()
        return {"ok": True}

    def GET_objects(self, q, body):
        with FX.store.cond:
            return {"resourceVersion": str(FX.store.rv), "items": [o for r in RESOURCES for o in FX.store.current(r)]}

    def POST_apply(self, q, body):
        objs, skipped = served_objects(parse_objects(body))
        done = [FX.store.apply(o) for o in objs]
        return {"applied": [{"type": t, "kind": o["kind"], "key": obj_key(o),
                             "resourceVersion": o["metadata"]["resourceVersion"]} for t, o in done],
                "skipped": skipped}

    def POST_delete(self, q, body):
        targets = [(q.get("resource") or KIND_TO_RES[q["kind"]], q.get("namespace"), q["name"])] if q.get("name") \
            else [(KIND_TO_RES[o["kind"]], (o.get("metadata") or {}).get("namespace"), o["metadata"]["name"]) for o in parse_objects(body)]
        deleted = []
        for res, ns, name in targets:
            if res not in RESOURCES:
                raise ValueError(f"unknown resource {res}")
            ns = (ns or "default") if RESOURCES[res][3] else ""
            gone = FX.store.delete(res, ns, name)
            deleted.append({"key": f"{ns}/{name}", "resourceVersion": gone and gone["metadata"]["resourceVersion"]})
        return {"deleted": deleted}

    def POST_compact(self, q, body):
        FX.store.compact()
        return {"oldestWatchableResourceVersion": str(FX.store.floor)}

    def POST_drop_watches(self, q, body):
        return {"dropped": FX.drop_watches()}

    def POST_stall(self, q, body):
        FX.stall_until = time.monotonic() + float(q.get("seconds", 10))
        return {"ok": True}

    def POST_fail(self, q, body):
        code, count = int(q.get("code", 503)), int(q.get("count", 1))
        with FX.lock:
            FX.failures.extend([code] * count)
        return {"pending_failures": len(FX.failures)}

    def POST_outage(self, q, body):
        FX.outage(float(q.get("seconds", 5)))
        return {"ok": True}

    def POST_tokens(self, q, body):
        tokens = [t for t in (q.get("token") or body).split() if t]
        if not tokens:
            raise ValueError("no token given")
        FX.tokens = set(tokens)
        write_atomic(FX.files["token"], tokens[0] + "\n")  # like a projected token being rotated
        return {"tokens": len(tokens)}

    def GET_kubeconfig(self, q, body):
        return FX.kubeconfig(q.get("auth", "cert"), q.get("style", "data"))

    def POST_shutdown(self, q, body):
        threading.Thread(target=FX.control.shutdown).start()
        return {"ok": True}


# ---------------------------------------------------------------- certificates and startup
OPENSSL_CNF = """[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_certs(d):
    """Create whatever of ca / server / client cert+key is missing in d (existing files are reused)."""
    p = lambda n: os.path.join(d, n)
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
    with open(p("openssl.cnf"), "w") as f:
        f.write(OPENSSL_CNF)
    if not os.path.exists(p("ca.crt")):
        run("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.crt"),
            "-days", "3650", "-subj", "/CN=fake-apiserver-ca", "-config", p("openssl.cnf"), "-extensions", "v3_ca")
    for name, subj in (("server", "/CN=kube-apiserver"), ("client", "/O=system:node-proxier/CN=system:kube-proxy")):
        if not os.path.exists(p(name + ".crt")):
            run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", p(name + ".key"), "-out", p(name + ".csr"),
                "-subj", subj, "-config", p("openssl.cnf"))
            run("x509", "-req", "-in", p(name + ".csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
                "-set_serial", str(secrets.randbits(63)), "-days", "3650", "-out", p(name + ".crt"),
                "-extfile", p("openssl.cnf"), "-extensions", "v3_" + name)
            os.remove(p(name + ".csr"))


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    global FX
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="API (HTTPS) port on 127.0.0.1; 0 = a free one")
    ap.add_argument("--port-file", help="write the API port here")
    ap.add_argument("--control-port", type=int, default=0, help="control (HTTP) port on 127.0.0.1; 0 = a free one")
    ap.add_argument("--control-port-file", help="write the control port here")
    ap.add_argument("--cert-dir", help="where certs are read from or generated (default: a temp dir removed on exit)")
    ap.add_argument("--tls-cert-file", help="serving certificate (default: cert-dir/server.crt)")
    ap.add_argument("--tls-private-key-file", help="its key (default: cert-dir/server.key)")
    ap.add_argument("--client-ca-file", help="CA for client certificates (default: cert-dir/ca.crt)")
    ap.add_argument("--token", action="append", default=[], help="accepted bearer token (repeatable; default: a random one)")
    ap.add_argument("--kubeconfig-out", help="write a kubeconfig for this server here")
    ap.add_argument("--kubeconfig-auth", choices=("cert", "token"), default="cert")
    ap.add_argument("--kubeconfig-style", choices=("data", "files"), default="data",
                    help="data: *-data base64 fields and inline token; files: paths and tokenFile")
    ap.add_argument("--load", action="append", default=[], help="JSON/YAML file of objects to start with (repeatable)")
    ap.add_argument("--bookmark-interval", type=float, default=5.0, help="seconds between BOOKMARKs; 0 = none")
    ap.add_argument("--watch-timeout", type=float, default=1800.0, help="watch length without timeoutSeconds")
    ap.add_argument("--history-size", type=int, default=1000, help="events kept for watches to resume from")
    ap.add_argument("--first-resource-version", type=int, default=1000,
                    help="resourceVersion of the first change (real servers' RVs are large, never 0)")
    ap.add_argument("--quiet", action="store_true", help="no request log on stderr")
    args = ap.parse_args()
    FX = Fixture(args)

    cert_dir, own_dir = args.cert_dir, not args.cert_dir
    cert_dir = cert_dir or tempfile.mkdtemp(prefix="fake-apiserver-")
    os.makedirs(cert_dir, exist_ok=True)
    make_certs(cert_dir)
    FX.files = {n: os.path.abspath(os.path.join(cert_dir, n)) for n in ("ca.crt", "client.crt", "client.key", "token")}
    if not FX.tokens:
        FX.tokens.add(secrets.token_hex(16))
    write_atomic(FX.files["token"], sorted(FX.tokens)[0] + "\n")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert_file or os.path.join(cert_dir, "server.crt"),
                        args.tls_private_key_file or os.path.join(cert_dir, "server.key"))
    ctx.load_verify_locations(args.client_ca_file or os.path.join(cert_dir, "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a client cert is checked if sent; else a token is needed
    ctx.set_alpn_protocols(["http/1.1"])
    FX.ssl_ctx = ctx

    for path in args.load:
        with open(path) as f:
            for obj in served_objects(parse_objects(f.read()))[0]:
                FX.store.apply(obj)

    FX.start_api()
    FX.control = Server(("127.0.0.1", args.control_port), ControlHandler)
    if args.kubeconfig_out:
        write_atomic(args.kubeconfig_out, FX.kubeconfig(args.kubeconfig_auth, args.kubeconfig_style))
    if args.control_port_file:
        write_atomic(args.control_port_file, f"{FX.control.server_address[1]}\n")
    if args.port_file:
        write_atomic(args.port_file, f"{FX.port}\n")
    print(f"CERTDIR {cert_dir}\nCONTROL {FX.control.server_address[1]}\nLISTENING {FX.port}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        FX.control.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if own_dir:
            shutil.rmtree(cert_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
