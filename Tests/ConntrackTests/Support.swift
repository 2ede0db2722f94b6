import Foundation

/// A fresh network namespace for one test (`ip netns add`), deleted when the body returns or
/// throws. Conntrack tables are per namespace, so nothing here touches the runner's own.
struct TestNamespace {
    let name: String
    var path: String { "/run/netns/\(name)" }

    static var isRoot: Bool { getuid() == 0 }

    static func with<T>(_ body: (TestNamespace) throws -> T) throws -> T {
        let ns = TestNamespace(name: "nftproxy-ct-\(getpid())-\(UUID().uuidString.prefix(8))")
        try Command.check(["ip", "netns", "add", ns.name])
        defer { _ = try? Command.run(["ip", "netns", "delete", ns.name]) }
        return try body(ns)
    }

    /// Runs a command inside the namespace; a non-zero exit throws.
    @discardableResult
    func check(_ arguments: [String]) throws -> String {
        try Command.check(["ip", "netns", "exec", name] + arguments)
    }

    func run(_ arguments: [String]) throws -> Command.Result {
        try Command.run(["ip", "netns", "exec", name] + arguments)
    }

    /// Creates the entries with `conntrack -I`, all in one shell.
    func insert(_ flows: [Flow]) throws {
        guard !flows.isEmpty else { return }
        let script = "set -e\n" + flows.map { $0.insertArguments.map(Command.quote).joined(separator: " ") }.joined(separator: "\n")
        try check(["/bin/sh", "-c", script])
    }

    /// Every conntrack entry of the namespace (`conntrack -L`, both families).
    func conntrackTable() throws -> Set<Flow> {
        var flows = Set<Flow>()
        for family in ["ipv4", "ipv6"] {
            let listing = try Command.run(["ip", "netns", "exec", name, "conntrack", "-L", "-f", family])
            guard listing.status == 0 else { throw Command.Failure("conntrack -L failed: \(listing.stderr)") }
            for line in listing.stdout.split(separator: "\n") {
                guard let flow = Flow(listing: String(line)) else { throw Command.Failure("cannot parse conntrack line: \(line)") }
                flows.insert(flow)
            }
        }
        return flows
    }
}

/// A conntrack entry as the `conntrack` tool writes and reads it.
struct Flow: Hashable, CustomStringConvertible {
    var proto: String
    var src: String, dst: String, sport: UInt16, dport: UInt16
    var replySrc: String, replyDst: String, replySport: UInt16, replyDport: UInt16
    var zone: UInt16 = 0

    /// A flow from `client:port` to `service:servicePort` answered by `backend:backendPort`
    /// (DNATed; pass the service itself as backend for an untranslated entry).
    static func udp(_ client: String, _ clientPort: UInt16, to service: String, _ servicePort: UInt16,
                    via backend: String, _ backendPort: UInt16, zone: UInt16 = 0) -> Flow {
        Flow(proto: "udp", src: client, dst: service, sport: clientPort, dport: servicePort,
             replySrc: backend, replyDst: client, replySport: backendPort, replyDport: clientPort, zone: zone)
    }

    static func tcp(_ client: String, _ clientPort: UInt16, to service: String, _ servicePort: UInt16,
                    via backend: String, _ backendPort: UInt16) -> Flow {
        var flow = udp(client, clientPort, to: service, servicePort, via: backend, backendPort)
        flow.proto = "tcp"
        return flow
    }

    var insertArguments: [String] {
        var arguments = ["conntrack", "-I", "-p", proto, "-s", src, "-d", dst, "--sport", "\(sport)", "--dport", "\(dport)",
                         "-r", replySrc, "-q", replyDst, "--reply-port-src", "\(replySport)", "--reply-port-dst", "\(replyDport)",
                         "-t", "300", "-u", "SEEN_REPLY"]
        if proto == "tcp" { arguments += ["--state", "ESTABLISHED"] }
        if zone != 0 { arguments += ["-w", "\(zone)"] }
        return arguments
    }

    /// Parses a `conntrack -L` line: the first src/dst/sport/dport are the original
    /// direction, the second the reply.
    init?(listing line: String) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let first = fields.first else { return nil }
        proto = String(first)
        var values: [String: [String]] = [:]
        for field in fields {
            let parts = field.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0]), default: []].append(String(parts[1])) }
        }
        guard let srcs = values["src"], let dsts = values["dst"], let sports = values["sport"], let dports = values["dport"],
              srcs.count == 2, dsts.count == 2, sports.count == 2, dports.count == 2,
              let sport = UInt16(sports[0]), let dport = UInt16(dports[0]),
              let replySport = UInt16(sports[1]), let replyDport = UInt16(dports[1]) else { return nil }
        (src, dst, self.sport, self.dport) = (srcs[0], dsts[0], sport, dport)
        (replySrc, replyDst, self.replySport, self.replyDport) = (srcs[1], dsts[1], replySport, replyDport)
        zone = values["zone"].flatMap { $0.first }.flatMap { UInt16($0) } ?? 0
    }

    init(proto: String, src: String, dst: String, sport: UInt16, dport: UInt16,
         replySrc: String, replyDst: String, replySport: UInt16, replyDport: UInt16, zone: UInt16 = 0) {
        (self.proto, self.src, self.dst, self.sport, self.dport) = (proto, src, dst, sport, dport)
        (self.replySrc, self.replyDst, self.replySport, self.replyDport, self.zone) = (replySrc, replyDst, replySport, replyDport, zone)
    }

    var description: String {
        "\(proto) \(src):\(sport)->\(dst):\(dport) reply \(replySrc):\(replySport)->\(replyDst):\(replyDport)" + (zone != 0 ? " zone \(zone)" : "")
    }
}

enum Command {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    @discardableResult
    static func check(_ arguments: [String]) throws -> String {
        let result = try run(arguments)
        guard result.status == 0 else {
            throw Failure("\(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr.prefix(2000))")
        }
        return result.stdout
    }

    /// Output goes to temporary files, so a long listing can never fill a pipe and stall.
    static func run(_ arguments: [String]) throws -> Result {
        let directory = FileManager.default.temporaryDirectory
        let outURL = directory.appendingPathComponent("nftproxy-ct-out-\(UUID().uuidString)")
        let errURL = directory.appendingPathComponent("nftproxy-ct-err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }

    static func quote(_ word: String) -> String {
        "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
