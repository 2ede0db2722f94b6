import Foundation
import NftIR
import RuleCompiler
import ServiceModel

/// A fresh network namespace (`ip netns add`), removed when the body returns or throws.
/// The netlink backend reaches it through `path`; `nft` runs in it through `ip netns exec`.
struct TestNamespace {
    let name: String
    var path: String { "/run/netns/\(name)" }

    static var isRoot: Bool { getuid() == 0 }

    static func with<T>(_ body: (TestNamespace) throws -> T) throws -> T {
        let ns = TestNamespace(name: "nftproxy-nl-\(getpid())-\(UUID().uuidString.prefix(8))")
        let created = try Shell.run(["ip", "netns", "add", ns.name])
        guard created.status == 0 else { throw Shell.Failure("ip netns add failed: \(created.stderr)") }
        defer { _ = try? Shell.run(["ip", "netns", "delete", ns.name]) }
        return try body(ns)
    }

    /// Runs `nft ARGS` in the namespace and returns its stdout; a non-zero exit throws.
    @discardableResult
    func nft(_ arguments: [String]) throws -> String {
        let result = try Shell.run(["ip", "netns", "exec", name, "nft"] + arguments)
        guard result.status == 0 else { throw Shell.Failure("nft \(arguments.joined(separator: " ")) failed: \(result.stderr.prefix(2000))") }
        return result.stdout
    }

    /// Loads an nft script from a temporary file.
    func load(_ script: String) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(6)).nft")
        try script.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        try nft(["-f", file.path])
    }

    func listRuleset() throws -> String { try nft(["list", "ruleset"]) }
}

enum Shell {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func run(_ arguments: [String]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read both pipes before waiting, so a large listing cannot fill a pipe and stall.
        let stderrReader = Thread.detachedReader(err.fileHandleForReading)
        let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
        let stderrData = stderrReader.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: stdoutData, as: UTF8.self),
                      stderr: String(decoding: stderrData, as: UTF8.self))
    }
}

/// The golden cases of the compiler tests, compiled here exactly as `nftproxy render` does.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let directory = root.appendingPathComponent("Tests/RuleCompilerTests/Fixtures")

    static var cases: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    static func expectedText(_ name: String) -> String? {
        try? String(contentsOf: directory.appendingPathComponent(name).appendingPathComponent("expected.nft"), encoding: .utf8)
    }

    static func compile(_ name: String) throws -> Ruleset { try compilation(name).ruleset }

    static func compilation(_ name: String) throws -> Compilation {
        // The `example` case renders the bundled examples/ folder.
        let stateDirectory = name == "example" ? root.appendingPathComponent("examples") : directory.appendingPathComponent(name)
        var config = NodeConfig()
        let configURL = stateDirectory.appendingPathComponent("config.yaml")
        if FileManager.default.fileExists(atPath: configURL.path) {
            config = try NodeConfig.decodeKubeProxyConfiguration(String(contentsOf: configURL, encoding: .utf8), base: config).config
        }
        var state = ClusterState()
        let files = try FileManager.default.contentsOfDirectory(atPath: stateDirectory.path)
            .filter { ($0.hasSuffix(".yaml") || $0.hasSuffix(".json")) && $0 != "config.yaml" }.sorted()
        for file in files {
            state.merge(StateDecoder.decode(try String(contentsOf: stateDirectory.appendingPathComponent(file), encoding: .utf8), source: file))
        }
        return RuleCompiler.compile(state, config: config)
    }

    /// Lines of an nft script without `#` comments, to compare a golden file with a fresh render.
    static func withoutComments(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("#") }.joined(separator: "\n")
    }
}

/// A generated cluster: services of mixed types, each with endpoints spread over two nodes
/// (the generator of KernelTests' RenderedRulesetTests).
enum ScaleState {
    static let config = NodeConfig(
        nodeName: "node-a", nodeIPs: [IPAddress("192.168.50.2")!], clusterCIDRs: [CIDR("10.0.0.0/8")!],
        serviceCIDRs: [CIDR("172.16.0.0/12")!]
    )

    static func make(services: Int, endpointsPerService: Int) -> ClusterState {
        var state = ClusterState()
        for index in 0..<services {
            let name = "svc-\(index)"
            let clusterIP = IPAddress(bytes: [172, 16 + UInt8(index >> 16), UInt8((index >> 8) & 0xff), UInt8(index & 0xff)])!
            let type: ServiceType = [.clusterIP, .clusterIP, .nodePort, .loadBalancer][index % 4]
            let nodePort: UInt16 = type == .clusterIP ? 0 : UInt16(30000 + index % 30000)
            let ingress = type == .loadBalancer
                ? [LoadBalancerIngress(ip: IPAddress(bytes: [198, 18 + UInt8(index >> 16), UInt8((index >> 8) & 0xff), UInt8(index & 0xff)])!)]
                : []
            state.services.append(Service(
                namespace: "scale", name: name, type: type, clusterIPs: [clusterIP], ipFamilies: [.ipv4],
                ports: [ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .number(8080), nodePort: nodePort)],
                loadBalancerIngress: ingress
            ))
            let endpoints = (0..<endpointsPerService).map { e in
                let id = index * endpointsPerService + e
                return Endpoint(
                    addresses: [IPAddress(bytes: [10, UInt8((id >> 16) & 0xff), UInt8((id >> 8) & 0xff), UInt8(id & 0xff)])!],
                    nodeName: e % 2 == 0 ? "node-a" : "node-b"
                )
            }
            state.endpointSlices.append(EndpointSlice(
                namespace: "scale", name: "\(name)-abc", serviceName: name, addressType: .ipv4,
                endpoints: endpoints, ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)]
            ))
        }
        return state
    }
}

/// Reads a pipe to its end on a background thread.
final class PipeReader: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func wait() -> Data {
        done.wait()
        return data
    }
}

extension Thread {
    static func detachedReader(_ handle: FileHandle) -> PipeReader { PipeReader(handle) }
}

/// What `body` returns or throws, run on a thread of its own; `TimedOut` when it has not ended
/// within `seconds`. For code that could block for good (two threads each waiting for the
/// other): the test then fails instead of hanging the run, and the stuck thread is left behind.
func within<T>(seconds: Double, _ body: @escaping @Sendable () throws -> T) throws -> T {
    let outcome = Outcome<T>()
    Thread.detachNewThread {
        outcome.result = Result { try body() }
        outcome.done.signal()
    }
    guard outcome.done.wait(timeout: .now() + seconds) == .success, let result = outcome.result else { throw TimedOut(seconds: seconds) }
    return try result.get()
}

private final class Outcome<T>: @unchecked Sendable {  // written by the thread before it signals, read after
    var result: Result<T, Error>?
    let done = DispatchSemaphore(value: 0)
}

struct TimedOut: Error, CustomStringConvertible {
    var seconds: Double
    var description: String { "did not end within \(seconds) s" }
}
