import ArgumentParser
import Foundation
import RuleCompiler
import ServiceModel

/// Flags every command that compiles rules shares: where the node facts come from.
struct NodeOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: ArgumentHelp("A KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1); flags given as well override its values.", valueName: "file"))
    var configFile: String?

    @Option(name: .customLong("hostname-override"), help: ArgumentHelp("This node's name: endpoints with this nodeName are local.", valueName: "name"))
    var hostnameOverride: String?

    @Option(name: .customLong("node-ip"), help: ArgumentHelp("This node's IP (repeat or comma-separate for dual-stack); default: the Node object's addresses.", valueName: "ip"))
    var nodeIPs: [String] = []

    @Option(name: .customLong("cluster-cidr"), help: ArgumentHelp("Pod CIDR(s), comma-separated: traffic from outside them to a ClusterIP is masqueraded.", valueName: "cidr"))
    var clusterCIDR: String?

    @Option(name: .customLong("service-cidr"), help: ArgumentHelp("Service CIDR(s), comma-separated: unallocated IPs in them are dropped (ServiceCIDR objects in STATE add to these).", valueName: "cidr"))
    var serviceCIDR: String?

    @Option(name: .customLong("nodeport-addresses"), help: ArgumentHelp("Where NodePorts answer: `primary` (default), CIDRs, or 0.0.0.0/0,::/0 for every local address; comma-separated.", valueName: "list"))
    var nodePortAddresses: String?

    @Flag(name: .customLong("masquerade-all"), help: "Masquerade all traffic sent to ClusterIPs.")
    var masqueradeAll = false

    @Option(name: .customLong("masquerade-bit"), help: ArgumentHelp("Packet-mark bit (0-31) that asks for masquerade (default 14: 0x4000).", valueName: "bit"))
    var masqueradeBit: Int?

    @Option(name: .customLong("table-shards"), help: ArgumentHelp("Spread services over this many tables per family (1-256; default: one per 1024 services, rounded to a power of two). More shards make a one-service change cheaper (it re-validates only its table) and every new connection dearer (it passes each shard's nat hooks).", valueName: "n"))
    var tableShards: Int?

    /// The node configuration: the file first, then each flag given on top.
    func nodeConfig() throws -> NodeConfig {
        var config = NodeConfig()
        do {
            if let configFile {
                let text: String
                do {
                    text = try String(contentsOfFile: configFile, encoding: .utf8)
                } catch {
                    throw ConfigError(field: "--config", message: "cannot read \(configFile): \(error.localizedDescription)")
                }
                let decoded = try NodeConfig.decodeKubeProxyConfiguration(text, base: config)
                config = decoded.config
                for note in decoded.notes { warn("\(configFile): \(note)") }
            }
            if let hostnameOverride {
                let name = hostnameOverride.trimmingCharacters(in: .whitespaces).lowercased()
                guard !name.isEmpty else { throw ConfigError(field: "--hostname-override", message: "must not be empty") }
                config.nodeName = name
            }
            if !nodeIPs.isEmpty {
                config.nodeIPs = try nodeIPs.flatMap { $0.split(separator: ",") }.map { text in
                    guard let ip = IPAddress(String(text).trimmingCharacters(in: .whitespaces)) else {
                        throw ConfigError(field: "--node-ip", message: "\"\(text)\" is not an IP address")
                    }
                    return ip
                }
            }
            if let clusterCIDR { config.clusterCIDRs = try NodeConfig.parseClusterCIDRs(clusterCIDR, field: "--cluster-cidr") }
            if let serviceCIDR { config.serviceCIDRs = try cidrs(serviceCIDR, field: "--service-cidr") }
            if let nodePortAddresses {
                config.nodePortAddresses = try NodeConfig.parseNodePortAddresses(
                    nodePortAddresses.split(separator: ",").map(String.init), field: "--nodeport-addresses")
            }
            if masqueradeAll { config.masqueradeAll = true }
            if let masqueradeBit {
                guard (0...31).contains(masqueradeBit) else {
                    throw ConfigError(field: "--masquerade-bit", message: "\(masqueradeBit) is not a bit number 0-31")
                }
                config.masqueradeBit = masqueradeBit
            }
            if let tableShards {
                guard (1...Sharding.maximum).contains(tableShards) else {
                    throw ConfigError(field: "--table-shards", message: "\(tableShards) is not a table count 1-\(Sharding.maximum)")
                }
                config.tableShards = tableShards
            }
        }
        return config
    }

    private func cidrs(_ list: String, field: String) throws -> [CIDR] {
        try list.split(separator: ",").map { item in
            guard let cidr = CIDR(String(item)) else { throw ConfigError(field: field, message: "\"\(item)\" is not a CIDR") }
            return cidr
        }
    }
}

/// Reads STATE paths: files, or folders searched for *.yaml, *.yml and *.json, in name order.
enum StateLoader {
    static func load(_ paths: [String]) throws -> ClusterState {
        var state = ClusterState()
        for path in paths {
            for file in try files(at: path) {
                let text: String
                do {
                    text = try String(contentsOfFile: file, encoding: .utf8)
                } catch {
                    throw CommandFailure("cannot read STATE file \(file): \(error.localizedDescription)")
                }
                state.merge(StateDecoder.decode(text, source: file))
            }
        }
        return state
    }

    private static func files(at path: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CommandFailure("STATE path \(path) does not exist")
        }
        guard isDirectory.boolValue else { return [path] }
        guard let walker = FileManager.default.enumerator(atPath: path) else { return [] }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            if [".yaml", ".yml", ".json"].contains(where: { relative.hasSuffix($0) }) {
                found.append((path as NSString).appendingPathComponent(relative))
            }
        }
        return found.sorted()
    }
}

/// Loads STATE, compiles it, and reports every skipped object on stderr. The decoded state is
/// kept until the process exits (`ProcessEnd`) unless `releasingState`: a command that goes on
/// to build a large batch frees it first, to lower its peak memory.
func compileState(_ paths: [String], options: NodeOptions, releasingState: Bool = false) throws -> Compilation {
    let config = try options.nodeConfig()
    let state = try StateLoader.load(paths)
    let compilation = RuleCompiler.compile(state, config: config)
    for problem in compilation.problems { warn(problem.description) }
    if !releasingState { ProcessEnd.keep(state) }
    return compilation
}

/// One-shot commands keep what they decoded and compiled until the process exits, and render
/// and apply end it as soon as their work is done: freeing a decoded state and its ruleset
/// value by value (millions of them at 100k services) would only delay the exit, so the memory
/// goes back with the process.
enum ProcessEnd {
    nonisolated(unsafe) private static var kept: [Any] = []

    /// Keeps `value` alive until the process exits.
    static func keep(_ value: Any) { kept.append(value) }

    /// Flushes standard output and exits with status 0, without tearing anything down.
    static func success(keeping value: Any) -> Never {
        keep(value)
        fflush(nil)  // every stdio stream, standard output included
        exit(0)
    }
}

/// A runtime failure the user can act on: printed as one line, exit status 2.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func warn(_ message: String) {
    FileHandle.standardError.write(Data("nftproxy: \(message)\n".utf8))
}
