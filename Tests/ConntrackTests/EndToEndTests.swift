import Foundation
import NftIR
import NftNetlink
import ServiceModel
import Testing

/// Real UDP traffic in one namespace: a client on 127.0.0.1 sending from a fixed source port
/// to a "service" 10.96.0.10:53 that an nft `dnat` in the output hook sends to backend A
/// (127.0.0.2) or B (127.0.0.3), each answering with its name. Conntrack keeps the first
/// decision for as long as the client keeps sending; only the flush lets it see the change.
@Suite(.enabled(if: TestNamespace.isRoot, "needs root for network namespaces"), .serialized)
struct EndToEndTests {
    static let server = """
    import select, socket, sys
    sockets = {}
    for name, address in (("A", "127.0.0.2"), ("B", "127.0.0.3")):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((address, 5353))
        sockets[s] = name
    while True:
        for s in select.select(list(sockets), [], [])[0]:
            data, peer = s.recvfrom(512)
            s.sendto(sockets[s].encode(), peer)
    """

    /// One datagram from 127.0.0.1:`sourcePort`; prints the answer or `none`.
    static let client = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[3])))
    s.settimeout(0.5)
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(512)[0].decode())
    except OSError:
        print("none")
    """

    private static let sourcePort = "40000"

    private func probe(_ ns: TestNamespace, _ address: String = "10.96.0.10", _ port: String = "53", from sourcePort: String = sourcePort) throws -> String {
        try ns.check(["/usr/bin/python3", "-c", Self.client, address, port, sourcePort]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func route(_ ns: TestNamespace, to backend: String?) throws {
        try ns.check(["nft", "flush", "chain", "ip", "svc", "out"])
        if let backend {
            try ns.check(["nft", "add", "rule", "ip", "svc", "out", "ip", "daddr", "10.96.0.10", "udp", "dport", "53", "dnat", "to", "\(backend):5353"])
        }
    }

    private let flushRequest = { (keep: String) in
        [ConntrackFlush(family: .ip, destinations: [IPAddress("10.96.0.10")!], port: 53, nodePort: 0, keepReplySources: [IPAddress(keep)!])]
    }

    /// Sets up the namespace, starts both backends, runs `body`, stops the backends.
    private func withService(_ body: (TestNamespace) throws -> Void) throws {
        try TestNamespace.with { ns in
            try ns.check(["ip", "link", "set", "lo", "up"])
            try ns.check(["ip", "addr", "add", "10.96.0.10/32", "dev", "lo"])
            try ns.check(["nft", "add", "table", "ip", "svc"])
            // The chain exists before any traffic, as our table does: a flow that met it without
            // a matching rule is bound to "no NAT" for good.
            try ns.check(["nft", "add chain ip svc out { type nat hook output priority -100 ; policy accept ; }"])
            // A `ct` match turns conntrack on in the namespace (a nat chain alone does not, until
            // it holds a nat rule), as our ruleset does on a node. What reaches the service IP
            // itself is dropped without an answer, as when a service has no endpoints.
            try ns.check(["nft", "add chain ip svc in { type filter hook input priority 0 ; policy accept ; }"])
            try ns.check(["nft", "add rule ip svc in ct state invalid drop"])
            try ns.check(["nft", "add rule ip svc in ip daddr 10.96.0.10 udp dport 53 drop"])
            let server = Process()
            server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            server.arguments = ["ip", "netns", "exec", ns.name, "/usr/bin/python3", "-c", Self.server]
            server.standardOutput = FileHandle.nullDevice
            try server.run()
            defer {
                // SIGKILL: a child spawned from a test thread inherits its blocked signal mask,
                // so SIGTERM would stay pending forever.
                kill(server.processIdentifier, SIGKILL)
                server.waitUntilExit()
            }
            // Both backends answer directly before the test starts (another source port, so
            // the flow under test is not created here).
            var ready = false
            for _ in 0..<40 where !ready {
                ready = try probe(ns, "127.0.0.2", "5353", from: "40001") == "A" && probe(ns, "127.0.0.3", "5353", from: "40001") == "B"
                if !ready { usleep(100_000) }
            }
            try #require(ready, "the backends did not start")
            try body(ns)
        }
    }

    /// UDP-CT-ENDPOINT-SWAP: after the rules move the service from A to B, the client still
    /// reaches A, until the flush deletes its entry; then it reaches B.
    @Test func endpointSwap() throws {
        try withService { ns in
            try route(ns, to: "127.0.0.2")
            #expect(try probe(ns) == "A")
            try route(ns, to: "127.0.0.3")
            #expect(try probe(ns) == "A", "the established entry should still lead to the removed backend")
            #expect(try probe(ns) == "A")
            let cleaner = NetlinkConntrack(netnsPath: ns.path)
            #expect(try cleaner.flush(flushRequest("127.0.0.3")) == 1)
            #expect(try probe(ns) == "B")
            // Now the entry is answered by a kept endpoint: the next run leaves it.
            #expect(try cleaner.flush(flushRequest("127.0.0.3")) == 0)
            #expect(try probe(ns) == "B")
        }
    }

    /// UDP-CT-FIRST-ENDPOINT (#48370): while the service had no endpoint the client got no
    /// answer, and its entry stayed untranslated after the endpoint appeared, until the flush.
    @Test func firstEndpoint() throws {
        try withService { ns in
            #expect(try probe(ns) == "none")
            try route(ns, to: "127.0.0.2")
            #expect(try probe(ns) == "none", "the untranslated entry should still bypass the new dnat rule")
            #expect(try NetlinkConntrack(netnsPath: ns.path).flush(flushRequest("127.0.0.2")) == 1)
            #expect(try probe(ns) == "A")
        }
    }
}
